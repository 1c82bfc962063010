"""Triton Python-backend model: probabilities pass through; each image's top-1 confidence goes into
a Prometheus histogram."""

from __future__ import annotations

import json

import triton_python_backend_utils as pb_utils

from shopvision.contract import CONFIDENCE_BUCKETS, CONFIDENCE_METRIC, RESNET_MODEL


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

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, self._input_name).as_numpy()
            for confidence in probabilities.max(axis=1).tolist():
                self._confidence.observe(confidence)
            output = pb_utils.Tensor(self._output_name, probabilities)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
