"""Triton Python-backend model: probabilities pass through; each image's top-1 confidence goes into
a Prometheus histogram. At load it also puts a banner in the server log when the weights beside it
are synthetic: resnet50 itself runs on a C++ backend that cannot say so."""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from shopvision.contract import CONFIDENCE_BUCKETS, CONFIDENCE_METRIC, PROVENANCE_FILE, RESNET_MODEL

_SYNTHETIC_BANNER = (
    "SYNTHETIC WEIGHTS: resnet50 version {version} has seeded random weights (source: {source}). "
    "Its classes and embeddings are meaningless; build real weights with "
    "`shopvision model build --weights resnet50-v1-12`."
)


def _announce_synthetic_weights(repository: Path) -> None:
    for provenance_file in sorted((repository / RESNET_MODEL).glob(f"[0-9]*/{PROVENANCE_FILE}")):
        provenance = json.loads(provenance_file.read_text())
        if provenance.get("synthetic"):
            banner = _SYNTHETIC_BANNER.format(version=provenance_file.parent.name, source=provenance.get("source"))
            pb_utils.Logger.log_warn("!" * 20 + " " + banner + " " + "!" * 20)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self._input_name = config["input"][0]["name"]
        self._output_name = config["output"][0]["name"]
        # The family must outlive its metric, hence both kept on the instance.
        self._family = pb_utils.MetricFamily(
            name=CONFIDENCE_METRIC,
            description="Top-1 softmax probability of each served image (drift in inputs shifts it)",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self._confidence = self._family.Metric(labels={"model": RESNET_MODEL}, buckets=list(CONFIDENCE_BUCKETS))
        _announce_synthetic_weights(Path(args["model_repository"]).parent)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, self._input_name).as_numpy()
            for confidence in probabilities.max(axis=1).tolist():
                self._confidence.observe(confidence)
            output = pb_utils.Tensor(self._output_name, probabilities)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
