"""The server side: preprocessing (imported by the Python-backend models), the model repository
build (weights, graph surgery, configs), promotion and rollback, the local tritonserver and the
container entry point. Needs the ``server``/``model``
extras; the SDK in :mod:`shopvision` never imports it."""
