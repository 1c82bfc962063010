"""Promote a new resnet50 version on a running server without dropping requests, or roll back.

Needs a server in explicit model-control mode (``shopvision serve --model-control explicit``) with
the admin key, and the model repository on this machine's filesystem (a local server, or the
volume a deployment mounts). The repository's files record the state, so a restart serves the same
version: resnet50's ``version_policy`` lists the loaded versions and the ensemble's resnet50 step
pins the one it serves.

Promoting version N while C serves:
1. pin resnet50 to [C] and the ensemble to C, then load resnet50 with versions [C, N] (C keeps serving);
2. check N: ready, finite outputs, probabilities summing to 1, unit-length embeddings, and the same
   outputs as onnxruntime running N's model.onnx in this process on a fixed set of images
   preprocessed by the server;
3. only then pin the ensemble to N (one atomic switch), and unload C.
A failed check unloads N and leaves C serving; the report says why.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shopvision.contract import (
    EMBEDDING,
    ENSEMBLE_MODEL,
    IMAGE_INPUT,
    MODEL_FILE,
    PIXELS,
    PREPROCESS_MODEL,
    PROBABILITIES,
    RESNET_MODEL,
)
from shopvision.errors import ShopvisionError
from shopvision.modeltools.build import VERSION_POLICY_LINE, read_provenance, stamp_provenance
from shopvision.samples import product_jpeg

HISTORY_FILE = "promotions.json"
PARITY_TOLERANCE = 1e-3
"""Largest |served - in-process| allowed in probabilities and embeddings (threading noise is ~1e-6)."""
_STEP_VERSION = re.compile(r'(model_name: "' + RESNET_MODEL + r'"\s*\n\s*model_version: )(-?\d+)')


class PromotionError(ShopvisionError):
    """A promotion or rollback could not start (bad version, no history, server not in explicit mode)."""


@dataclass
class PromotionReport:
    version: int
    previous: int
    promoted: bool
    checks: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


class ModelRepository:
    """The files that say which resnet50 versions are loaded and which one the ensemble serves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model_dir = root / RESNET_MODEL
        self.ensemble_config = root / ENSEMBLE_MODEL / "config.pbtxt"

    def resnet_configs(self) -> list[Path]:
        return [self.model_dir / "config.pbtxt", *sorted((self.model_dir / "configs").glob("*.pbtxt"))]

    def built_versions(self) -> list[int]:
        return sorted(int(path.parent.name) for path in self.model_dir.glob(f"[0-9]*/{MODEL_FILE}"))

    def pinned_version(self) -> int | None:
        """The resnet50 version the ensemble is pinned to, or None while it follows the latest one."""
        pinned = int(_STEP_VERSION.search(self.ensemble_config.read_text()).group(2))
        return pinned if pinned > 0 else None

    def pin_ensemble(self, version: int) -> None:
        _rewrite(self.ensemble_config, lambda text: _STEP_VERSION.sub(rf"\g<1>{version}", text))

    def load_versions(self, versions: list[int]) -> None:
        policy = f"version_policy: {{ specific: {{ versions: [ {', '.join(map(str, sorted(set(versions))))} ] }} }}"
        for config in self.resnet_configs():
            _rewrite(config, lambda text: VERSION_POLICY_LINE.sub(policy, text))

    def history(self) -> list[dict]:
        path = self.model_dir / HISTORY_FILE
        return json.loads(path.read_text()) if path.exists() else []

    def record(self, report: PromotionReport) -> None:
        entries = [*self.history(), {**asdict(report), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
        _rewrite(self.model_dir / HISTORY_FILE, lambda _: json.dumps(entries, indent=2) + "\n")


def promote(repository: Path, version: int, *, url: str, admin_key: str, headers_key: str) -> PromotionReport:
    """Make ``version`` the served resnet50 on the server at ``url`` (HTTP), checking it first."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    files = ModelRepository(repository)
    if version not in files.built_versions():
        raise PromotionError(f"resnet50 version {version} is not built in {repository} "
                             f"(built: {files.built_versions()}); run `shopvision model build --version {version}`")
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    headers = {headers_key: admin_key}
    try:
        current = files.pinned_version() or _loaded_version(client, headers)
    except InferenceServerException as error:
        client.close()
        raise PromotionError(f"cannot read the server's models ({error.message()}); is the admin key right?") from error
    report = PromotionReport(version=version, previous=current, promoted=False)
    if version == current:
        client.close()
        report.reason = f"version {version} is already serving"
        return report

    def load(model: str) -> None:
        client.load_model(model, headers=headers)

    try:
        # Pin what serves now, in both files, before anything else is loaded: loading the ensemble
        # reloads resnet50 from disk, and under `latest 1` that would swap in the newest version unchecked.
        files.load_versions([current])
        files.pin_ensemble(current)
        load(ENSEMBLE_MODEL)
        files.load_versions([current, version])
        try:
            load(RESNET_MODEL)
        except InferenceServerException as error:  # the new version failed to load; the old one still serves
            report.checks["load"] = error.message()
            failure = f"version {version} failed to load: {error.message()}"
        else:
            failure = check_version(client, files, version, report.checks)
        if failure is not None:
            report.reason = failure
            files.load_versions([current])
            load(RESNET_MODEL)
            files.record(report)
            return report
        files.pin_ensemble(version)
        load(ENSEMBLE_MODEL)
        provenance = read_provenance(files.model_dir / str(version))
        if provenance is not None:
            stamp_provenance(files.model_dir, provenance)
        files.load_versions([version])
        load(RESNET_MODEL)
    except InferenceServerException as error:
        raise PromotionError(f"the server refused a repository operation ({error.message()}); is it in "
                             "explicit model-control mode, and is the admin key right?") from error
    finally:
        client.close()
    report.promoted = True
    files.record(report)
    return report


def rollback(repository: Path, *, url: str, admin_key: str, headers_key: str) -> PromotionReport:
    """Promote the version that served before the last successful promotion."""
    promotions = [entry for entry in ModelRepository(repository).history() if entry["promoted"]]
    if not promotions:
        raise PromotionError("nothing to roll back: no successful promotion is recorded")
    return promote(repository, promotions[-1]["previous"], url=url, admin_key=admin_key, headers_key=headers_key)


def _loaded_version(client, headers: dict[str, str]) -> int:  # noqa: ANN001
    """The resnet50 version the server has loaded (the newest ready one, as `latest 1` serves)."""
    index = client.get_model_repository_index(headers=headers)
    ready = [int(entry["version"]) for entry in index
             if entry["name"] == RESNET_MODEL and entry.get("state") == "READY" and entry.get("version")]
    if not ready:
        raise PromotionError("the server has no resnet50 version loaded")
    return max(ready)


def check_version(client, files: ModelRepository, version: int, checks: dict[str, str]) -> str | None:  # noqa: ANN001
    """Why ``version`` must not serve, or None when it passed every check (results go into ``checks``)."""
    import onnxruntime as ort
    import tritonclient.http as httpclient

    if not client.is_model_ready(RESNET_MODEL, str(version)):
        checks["ready"] = "no"
        return f"resnet50 version {version} did not become ready (see the server log)"
    checks["ready"] = "yes"
    images = np.array([[product_jpeg(seed, size=(320, 240))] for seed in range(4)], dtype=object)
    image_input = httpclient.InferInput(IMAGE_INPUT, list(images.shape), "BYTES")
    image_input.set_data_from_numpy(images)
    pixels = client.infer(PREPROCESS_MODEL, [image_input]).as_numpy(PIXELS)
    pixel_input = httpclient.InferInput(PIXELS, list(pixels.shape), "FP32")
    pixel_input.set_data_from_numpy(pixels)
    served = client.infer(RESNET_MODEL, [pixel_input], model_version=str(version))
    probabilities, embedding = served.as_numpy(PROBABILITIES), served.as_numpy(EMBEDDING)
    if not (np.isfinite(probabilities).all() and np.isfinite(embedding).all()):
        checks["finite"] = "no"
        return f"version {version} returns non-finite outputs"
    sums = np.abs(probabilities.sum(axis=1) - 1).max()
    norms = np.abs(np.linalg.norm(embedding, axis=1) - 1).max()
    checks["outputs"] = f"probabilities sum to 1 within {sums:.1e}, embeddings unit length within {norms:.1e}"
    if sums > 1e-3 or norms > 1e-3:
        return f"version {version} is not a shopvision model: {checks['outputs']}"
    session = ort.InferenceSession(str(files.model_dir / str(version) / MODEL_FILE), providers=["CPUExecutionProvider"])
    expected_probabilities, expected_embedding = session.run([PROBABILITIES, EMBEDDING], {PIXELS: pixels})
    difference = max(float(np.abs(probabilities - expected_probabilities).max()),
                     float(np.abs(embedding - expected_embedding).max()))
    checks["parity"] = f"max |served - onnxruntime| = {difference:.1e} on 4 fixed images (tolerance {PARITY_TOLERANCE})"
    if difference > PARITY_TOLERANCE:
        return f"version {version} does not serve what its model.onnx computes: {checks['parity']}"
    return None


def _rewrite(path: Path, change) -> None:  # noqa: ANN001
    """Replace a file atomically, so a crash never leaves a half-written config."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(change(path.read_text() if path.exists() else ""))
    os.replace(partial, path)
