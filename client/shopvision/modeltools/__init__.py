"""Model tooling: build ``model.onnx`` for the repository (needs the ``model`` extra: onnx)."""
