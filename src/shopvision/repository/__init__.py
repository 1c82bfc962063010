"""The built model repository and what edits it: its files (versions, configs, provenance, history), config
edits through Triton's protobuf schema, and the one promotion engine with its two targets, resnet50 versions
and categories heads. Reading a version's ONNX file needs the ``model`` extra; the SDK never imports it."""
