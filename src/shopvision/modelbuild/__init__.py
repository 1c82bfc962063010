"""``shopvision model build``: backbone weights from the ONNX Model Zoo, a local file or a synthetic ResNet50,
turned into the graph the repository serves (graph surgery) and written into the built repository. Needs the
``model`` extra; the SDK never imports it."""
