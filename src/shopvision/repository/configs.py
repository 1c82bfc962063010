"""Read and write Triton model configurations through Triton's own protobuf schema, never as text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from shopvision._files import atomic_write

ModelConfig = Any
"""``model_config_pb2.ModelConfig``: generated protobuf code without type information."""


def read_config(path: Path) -> ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def edit_config(path: Path, edit: Callable[[ModelConfig], None]) -> None:
    """Parse, change and rewrite a config. Comments do not survive: edit built copies, never the template.

    A link (symbolic or hard) becomes a file of its own, leaving its target alone.
    """
    config = read_config(path)
    edit(config)
    atomic_write(path, text_format.MessageToString(config).encode())


