"""Triton Python-backend model: ResNet50 on an inference engine from PyPI (ONNX Runtime or OpenVINO).

The ``cpu`` configuration (``--model-config-name=cpu``), wherever a CPU serves: it runs the version's
``model.onnx`` on the whole dynamic batch with the engine the config's ``engine`` parameter names
(:mod:`shopvision.backend.engines`). The categories head's ``cpu`` config runs a copy of it too.

CPU execution (measured in benchmarks/results): several instances with a share of the cores each
keep every core busy under load, without per-operator hand-offs between threads. A lone image is
faster on every core, so each instance keeps a second, all-core session for the moment when no
other instance computes: the instances of one server share a lock file, held shared while a
batch runs and exclusively (only if free at once) while a lone image runs on every core. It lives
in a directory only this user can enter (``$TMPDIR/shopvision-<uid>``, mode 0700): a lock that
another local user could open and hold would stall every lone image.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from shopvision.backend.engines import available_cores, open_engine
from shopvision.contract import ENGINE_PARAMETER, ENGINES, MODEL_FILE


def _private_directory() -> Path:
    directory = Path(tempfile.gettempdir()) / f"shopvision-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    status = directory.lstat()
    # Someone else may have made it first (or a link by that name): then it is not ours to trust.
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise RuntimeError(
            f"{directory} exists but is not a directory private to uid {os.getuid()}: remove it or set TMPDIR")
    return directory


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}

        cores = available_cores()
        instances = sum(group.get("count", 1) for group in config.get("instance_group", [])) or 1
        threads = int(parameters.get("intra_op_threads", "0")) or max(1, cores // instances)
        single_image_threads = int(parameters.get("single_image_intra_op_threads", "0")) or cores
        self._input_name = input_name = config["input"][0]["name"]
        self._output_names = [output["name"] for output in config["output"]]

        def engine(threads: int):
            return open_engine(parameters.get(ENGINE_PARAMETER, ENGINES[0]), version_dir / MODEL_FILE,
                               input_name=input_name, output_names=self._output_names, threads=threads,
                               spinning=parameters.get("allow_spinning", "0") == "1")

        self._engine = engine(threads)
        self._single_image_engine = engine(single_image_threads) if single_image_threads > threads else None
        lock_name = f"{args['model_name']}-{os.getppid()}.cores"
        self._cores = open(_private_directory() / lock_name, "ab")  # noqa: SIM115 (held for the model's life)

    def execute(self, requests: list) -> list:
        batches = [pb_utils.get_input_tensor_by_name(r, self._input_name).as_numpy() for r in requests]
        # One request (the usual case at low load) is run as it came, without a copy.
        outputs = self._infer(batches[0] if len(batches) == 1 else np.concatenate(batches))

        responses = []
        offset = 0
        for batch in batches:
            count = len(batch)
            tensors = [
                pb_utils.Tensor(name, values[offset : offset + count])
                for name, values in zip(self._output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += count
        return responses

    def _infer(self, pixels: np.ndarray) -> list[np.ndarray]:
        if len(pixels) == 1 and self._single_image_engine is not None:
            try:
                fcntl.flock(self._cores, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another instance is computing: this image takes its share of the cores
            else:
                try:
                    return self._single_image_engine.run(pixels)
                finally:
                    fcntl.flock(self._cores, fcntl.LOCK_UN)
        fcntl.flock(self._cores, fcntl.LOCK_SH)
        try:
            return self._engine.run(pixels)
        finally:
            fcntl.flock(self._cores, fcntl.LOCK_UN)

    def finalize(self) -> None:
        self._cores.close()
