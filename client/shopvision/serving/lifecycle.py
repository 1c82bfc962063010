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

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopvision.client import Client
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
from shopvision.errors import PermissionDeniedError, ShopvisionError
from shopvision.samples import product_jpeg
from shopvision.serving.repository import CategoryHeads, ModelRepository, Provenance, read_provenance

PARITY_TOLERANCE = 1e-3
"""Largest |served - in-process| allowed in probabilities and embeddings (threading noise is ~1e-6)."""


class PromotionError(ShopvisionError):
    """A promotion or rollback could not start (bad version, no history, server not in explicit mode)."""


@dataclass
class PromotionReport:
    version: int
    previous: int
    promoted: bool
    checks: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def promote(repository: Path, version: int, *, url: str, admin_key: str) -> PromotionReport:
    """Make ``version`` the served resnet50 on the server at ``url`` (gRPC or HTTP), checking it first."""
    files = ModelRepository(repository)
    if version not in files.built_versions():
        raise PromotionError(f"resnet50 version {version} is not built in {repository} "
                             f"(built: {files.built_versions()}); run `shopvision model build --version {version}`")
    with Client(url, admin_key=admin_key) as client:
        try:
            current = serving_version(client, files)
        except PermissionDeniedError as error:
            raise PromotionError(f"cannot read the server's models: {error}") from error
        report = PromotionReport(version=version, previous=current, promoted=False)
        if version == current:
            report.reason = f"version {version} is already serving"
            return report
        _refuse_another_width(files, current, version)
        with repository_operations():
            _switch(client, files, report)
    files.record(asdict(report))
    return report


def rollback(repository: Path, *, url: str, admin_key: str) -> PromotionReport:
    """Promote the version that served before the last successful promotion."""
    return promote(repository, served_before_last_promotion(ModelRepository(repository).history()), url=url,
                   admin_key=admin_key)


@contextlib.contextmanager
def repository_operations() -> Iterator[None]:
    """The server's refusals while models are switched, as one error that says what to check."""
    try:
        yield
    except ShopvisionError as error:
        raise PromotionError(f"the server refused a repository operation ({error}); is it in "
                             "explicit model-control mode, and is the admin key right?") from error


def _refuse_another_width(files: ModelRepository, current: int, version: int) -> None:
    """A live switch keeps one embedding width: the ensemble, the head and every catalog are built for it."""
    serving, candidate = (read_provenance(files.model_dir / str(v)) for v in (current, version))
    if serving is None or candidate is None or serving.embedding_dim == candidate.embedding_dim:
        return
    raise PromotionError(
        f"version {version} is {candidate.backbone} with {candidate.embedding_dim}-d embeddings, and version {current} "
        f"serves {serving.backbone} with {serving.embedding_dim}-d ones: another backbone is not switched live. "
        "Build it into a fresh repository and restart the server on it, then rebuild every catalog and categories "
        "head against it (their vectors are not comparable across backbones)")


def served_before_last_promotion(history: list[dict[str, Any]]) -> int:
    promotions = [entry for entry in history if entry["promoted"]]
    if not promotions:
        raise PromotionError("nothing to roll back: no successful promotion is recorded")
    previous: int = promotions[-1]["previous"]
    return previous


def _switch(client: Client, files: ModelRepository, report: PromotionReport) -> None:
    """Steps 1-3 of the module docstring; ``report`` says whether the new version serves now, and why not."""
    current, version = report.previous, report.version
    pin_serving_version(files, current)
    client.load_model(ENSEMBLE_MODEL)
    files.load_versions([current, version])
    try:
        client.load_model(RESNET_MODEL)
    except PermissionDeniedError:
        raise
    except ShopvisionError as error:  # the new version failed to load; the old one still serves
        report.checks["load"] = str(error)
        failure: str | None = f"version {version} failed to load: {error}"
    else:
        failure = check_version(client, files, version, report.checks)
    if failure is not None:
        report.reason = failure
        files.load_versions([current])
        client.load_model(RESNET_MODEL)
        return
    files.pin_ensemble(version)
    client.load_model(ENSEMBLE_MODEL)
    provenance = read_provenance(files.model_dir / str(version))
    if provenance is not None:
        files.stamp_provenance(provenance)
    files.load_versions([version])
    client.load_model(RESNET_MODEL)
    report.promoted = True
    stale = _stale_head(files.root, provenance)
    if stale is not None:
        report.checks["categories"] = stale


def _stale_head(repository: Path, provenance: Provenance | None) -> str | None:
    """A warning when the categories head that serves was trained on other weights' embeddings than these."""
    heads = CategoryHeads(repository)
    head = heads.serving_version()
    if head is None:
        return None
    trained_on = heads.provenance(head).get("embedding_model_sha256")
    if provenance is not None and trained_on == provenance.model_sha256:
        return None
    return (f"WARNING: categories head {head} serves, trained on the embeddings of model {trained_on}, not of "
            "this version: its categories mean nothing until a head trained on this version is promoted "
            "(`shopvision categories train`, then `shopvision categories promote`)")


def pin_serving_version(files: ModelRepository, current: int) -> None:
    """Write the resnet50 version that serves into both files before anything else is loaded: loading the
    ensemble reloads resnet50 from disk, and under `latest 1` that would swap in the newest build unchecked."""
    files.load_versions([current])
    files.pin_ensemble(current)


def serving_version(client: Client, files: ModelRepository) -> int:
    """The resnet50 version the server runs: the ensemble's pin, else the one it loaded."""
    return files.pinned_version() or _loaded_version(client)


def _loaded_version(client: Client) -> int:
    """The resnet50 version the server has loaded (the newest ready one, as `latest 1` serves)."""
    ready = [int(entry["version"]) for entry in client.repository_index()
             if entry["name"] == RESNET_MODEL and entry.get("state") == "READY" and entry.get("version")]
    if not ready:
        raise PromotionError("the server has no resnet50 version loaded")
    return max(ready)


def check_version(client: Client, files: ModelRepository, version: int, checks: dict[str, str]) -> str | None:
    """Why ``version`` must not serve, or None when it passed every check (results go into ``checks``)."""
    import onnxruntime as ort

    if not client.is_model_ready(RESNET_MODEL, version=version):
        checks["ready"] = "no"
        return f"resnet50 version {version} did not become ready (see the server log)"
    checks["ready"] = "yes"
    images = np.array([[product_jpeg(seed, size=(320, 240))] for seed in range(4)], dtype=object)
    pixels = client.infer_tensors(PREPROCESS_MODEL, {IMAGE_INPUT: images}, [PIXELS])[PIXELS]
    served = client.infer_tensors(RESNET_MODEL, {PIXELS: pixels}, [PROBABILITIES, EMBEDDING], version=version)
    probabilities, embedding = served[PROBABILITIES], served[EMBEDDING]
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
