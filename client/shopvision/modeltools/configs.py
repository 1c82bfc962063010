"""Read and write Triton model configurations through Triton's own protobuf schema, never as text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig


def read_config(path: Path) -> ModelConfig:
    return text_format.Parse(path.read_text(), ModelConfig())


def edit_config(path: Path, edit: Callable[[ModelConfig], None]) -> None:
    """Parse, change and rewrite a config. Comments do not survive: edit copies, never the template."""
    config = read_config(path)
    edit(config)
    path.unlink()  # a link (configs/python_ort.pbtxt) becomes a file of its own, leaving its target alone
    path.write_text(text_format.MessageToString(config))
