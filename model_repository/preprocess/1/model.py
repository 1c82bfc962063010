"""Triton Python-backend model: a dynamic batch of encoded images -> normalised pixels."""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from shopvision.backend.preprocessing import DecodeLimits, ImageRejected, Preprocessor
from shopvision.contract import REJECTED_IMAGE


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self._input_name = config["input"][0]["name"]
        self._output_name = config["output"][0]["name"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        limits = DecodeLimits(
            max_bytes=int(parameters.get("max_image_bytes", DecodeLimits.max_bytes)),
            max_pixels=int(parameters.get("max_image_pixels", DecodeLimits.max_pixels)),
        )
        self._preprocessor = Preprocessor(
            limits=limits, jpeg_draft=parameters.get("jpeg_draft", "false").lower() == "true"
        )

    def execute(self, requests: list) -> list:
        crops_per_request: list[np.ndarray | str] = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, self._input_name).as_numpy().reshape(-1)
            crops_per_request.append(self._crop_all(images))

        decoded = [crops for crops in crops_per_request if isinstance(crops, np.ndarray)]
        # Normalising the whole dynamic batch at once is one vectorised numpy pass.
        pixels = self._preprocessor.normalise(np.concatenate(decoded)) if decoded else None

        responses = []
        offset = 0
        for crops in crops_per_request:
            if isinstance(crops, str):
                error = pb_utils.TritonError(crops, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            count = len(crops)
            output = pb_utils.Tensor(self._output_name, pixels[offset : offset + count])
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            offset += count
        return responses

    def _crop_all(self, images: np.ndarray) -> np.ndarray | str:
        """uint8 crops for every image of one request, or the reason the request is rejected."""
        crops = []
        for position, data in enumerate(images):
            try:
                crops.append(self._preprocessor.crop(bytes(data)))
            except ImageRejected as rejection:
                where = f" {position + 1} of {len(images)}" if len(images) > 1 else ""
                return f"{REJECTED_IMAGE}{where}: {rejection}"
        return np.stack(crops)
