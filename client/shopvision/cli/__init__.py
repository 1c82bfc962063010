"""The ``shopvision`` command line."""
