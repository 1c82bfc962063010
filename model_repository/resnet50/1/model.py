"""Triton Python-backend model: ResNet50 through the onnxruntime package.

Only used with ``--model-config-name=python_ort``, on tritonserver builds that lack the
native ONNX Runtime backend. It runs the same ``model.onnx`` on the whole dynamic batch.

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
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from shopvision.contract import MODEL_FILE


def _session(model_file: str, *, threads: int, spinning: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])


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

        model_file = str(version_dir / MODEL_FILE)
        spinning = parameters.get("allow_spinning", "0")
        cores = len(os.sched_getaffinity(0))
        instances = sum(group.get("count", 1) for group in config.get("instance_group", [])) or 1
        threads = int(parameters.get("intra_op_threads", "0")) or max(1, cores // instances)
        single_image_threads = int(parameters.get("single_image_intra_op_threads", "0")) or cores
        self._session = _session(model_file, threads=threads, spinning=spinning)
        self._single_image_session = (
            _session(model_file, threads=single_image_threads, spinning=spinning)
            if single_image_threads > threads else None
        )
        lock_name = f"{args['model_name']}-{os.getppid()}.cores"
        self._cores = open(_private_directory() / lock_name, "ab")  # noqa: SIM115 (held for the model's life)
        self._input_name = config["input"][0]["name"]
        self._output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list) -> list:
        batches = [pb_utils.get_input_tensor_by_name(r, self._input_name).as_numpy() for r in requests]
        outputs = self._infer(np.concatenate(batches))

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
        feed = {self._input_name: pixels}
        if len(pixels) == 1 and self._single_image_session is not None:
            try:
                fcntl.flock(self._cores, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another instance is computing: this image takes its share of the cores
            else:
                try:
                    return self._single_image_session.run(self._output_names, feed)
                finally:
                    fcntl.flock(self._cores, fcntl.LOCK_UN)
        fcntl.flock(self._cores, fcntl.LOCK_SH)
        try:
            return self._session.run(self._output_names, feed)
        finally:
            fcntl.flock(self._cores, fcntl.LOCK_UN)

    def finalize(self) -> None:
        self._cores.close()
