"""Triton Python-backend model: ResNet50 through the onnxruntime package.

Only used with ``--model-config-name=python_ort``, on tritonserver builds that lack the
native ONNX Runtime backend. It runs the same ``model.onnx`` on the whole dynamic batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from shopvision.contract import MODEL_FILE, PROVENANCE_FILE

_SYNTHETIC_BANNER = (
    "SYNTHETIC WEIGHTS: resnet50 version {version} has seeded random weights (source: {source}). "
    "Its classes and embeddings are meaningless; build real weights with "
    "`shopvision model build --weights resnet50-v1-12`."
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", parameters.get("allow_spinning", "0"))
        self._session = ort.InferenceSession(
            str(version_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._input_name = config["input"][0]["name"]
        self._output_names = [output["name"] for output in config["output"]]

        provenance_file = version_dir / PROVENANCE_FILE
        if provenance_file.exists():
            provenance = json.loads(provenance_file.read_text())
            if provenance.get("synthetic"):
                banner = _SYNTHETIC_BANNER.format(version=args["model_version"], source=provenance.get("source"))
                pb_utils.Logger.log_warn("!" * 20 + " " + banner + " " + "!" * 20)

    def execute(self, requests: list) -> list:
        batches = [pb_utils.get_input_tensor_by_name(r, self._input_name).as_numpy() for r in requests]
        outputs = self._session.run(self._output_names, {self._input_name: np.concatenate(batches)})

        responses = []
        offset = 0
        for batch in batches:
            count = len(batch)
            tensors = [
                pb_utils.Tensor(name, values[offset : offset + count])
                for name, values in zip(self._output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += count
        return responses
