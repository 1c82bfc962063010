"""Promote a new resnet50 version on a running server without dropping requests, or roll back.

The steps are :mod:`shopvision.repository.promotion`'s; this is what is resnet50's own. The repository's files
record the state, so a restart serves the same version: resnet50's ``version_policy`` lists the loaded versions
and the ensemble's resnet50 step pins the one it serves.

Promoting version N while C serves:
1. refuse N unless built, and unless its embeddings are as wide as C's (a backbone is not switched live);
2. pin resnet50 to [C] and the ensemble to C, reload the ensemble, then load resnet50 with versions [C, N];
3. check N: ready, finite outputs, probabilities summing to 1, unit-length embeddings, and the same
   outputs as onnxruntime running N's model.onnx in this process on a fixed set of images
   preprocessed by the server;
4. only then pin the ensemble to N (one atomic switch), stamp N's provenance in the configs, and unload C;
   a categories head trained on other weights' embeddings is named in a warning.
"""

from __future__ import annotations

from pathlib import Path

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
from shopvision.repository import promotion
from shopvision.repository.files import CategoryHeads, ModelRepository
from shopvision.repository.promotion import Checked, PromotionError, Target
from shopvision.repository.records import PromotionRecord, read_weights_provenance
from shopvision.samples import product_jpeg
from shopvision.types import WeightsProvenance

__all__ = ["PromotionError", "PromotionRecord", "ModelRepository", "ResnetVersions", "promote", "rollback"]

PARITY_TOLERANCE = 1e-3
"""Largest |served - in-process| allowed in probabilities and embeddings (threading noise is ~1e-6)."""


class ResnetVersions(Target):
    """resnet50's built versions as a promotion target."""

    subject = "resnet50 version"
    files: ModelRepository

    def __init__(self, repository: Path) -> None:
        super().__init__(ModelRepository(repository))

    def serving(self, client: Client) -> int:
        return serving_version(client, self.files)

    def require_built(self, version: int) -> None:
        if version not in self.files.built_versions():
            raise PromotionError(f"resnet50 version {version} is not built in {self.files.root} (built: "
                                 f"{self.files.built_versions()}); run `shopvision model build --version {version}`")

    def refuse(self, version: int, current: int) -> None:
        """A live switch keeps one embedding width: the ensemble, the head and every catalog are built for it."""
        serving, candidate = (read_weights_provenance(self.files.model_dir / str(v)) for v in (current, version))
        if serving is None or candidate is None or serving.embedding_dim == candidate.embedding_dim:
            return
        raise PromotionError(
            f"version {version} is {candidate.backbone} with {candidate.embedding_dim}-d embeddings, and version "
            f"{current} serves {serving.backbone} with {serving.embedding_dim}-d ones: another backbone is not "
            "switched live. Build it into a fresh repository and restart the server on it, then rebuild every "
            "catalog and categories head against it (their vectors are not comparable across backbones)")

    def hold(self, client: Client, current: int) -> None:
        pin_serving_version(self.files, current)
        client.load_model(ENSEMBLE_MODEL)

    def check(self, client: Client, version: int) -> Checked:
        return check_version(client, self.files, version)

    def switch(self, client: Client, version: int) -> None:
        self.files.pin_ensemble(version)
        client.load_model(ENSEMBLE_MODEL)
        provenance = read_weights_provenance(self.files.model_dir / str(version))
        if provenance is not None:
            self.files.stamp_provenance(provenance)

    def after(self, version: int) -> dict[str, str]:
        stale = _stale_head(self.files.root, read_weights_provenance(self.files.model_dir / str(version)))
        return {} if stale is None else {"categories": stale}


def promote(repository: Path, version: int, *, url: str, admin_key: str) -> PromotionRecord:
    """Make ``version`` the served resnet50 on the server at ``url`` (gRPC or HTTP), checking it first."""
    return promotion.promote(ResnetVersions(repository), version, url=url, admin_key=admin_key)


def rollback(repository: Path, *, url: str, admin_key: str) -> PromotionRecord:
    """Promote the version that served before the last successful promotion."""
    return promotion.rollback(ResnetVersions(repository), url=url, admin_key=admin_key)


def _stale_head(repository: Path, provenance: WeightsProvenance | None) -> str | None:
    """A warning when the categories head that serves was trained on other weights' embeddings than these."""
    heads = CategoryHeads(repository)
    head = heads.serving_version()
    if head is None:
        return None
    trained_on = heads.provenance(head).embeddings.model_sha256
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


def check_version(client: Client, files: ModelRepository, version: int) -> Checked:
    """Whether ``version`` may serve: each check's outcome, and the first failure's reason."""
    import onnxruntime as ort

    checks: dict[str, str] = {}
    if not client.is_model_ready(RESNET_MODEL, version=version):
        checks["ready"] = "no"
        return Checked(checks, f"resnet50 version {version} did not become ready (see the server log)")
    checks["ready"] = "yes"
    images = np.array([[product_jpeg(seed, size=(320, 240))] for seed in range(4)], dtype=object)
    pixels = client.infer_tensors(PREPROCESS_MODEL, {IMAGE_INPUT: images}, [PIXELS])[PIXELS]
    served = client.infer_tensors(RESNET_MODEL, {PIXELS: pixels}, [PROBABILITIES, EMBEDDING], version=version)
    probabilities, embedding = served[PROBABILITIES], served[EMBEDDING]
    if not (np.isfinite(probabilities).all() and np.isfinite(embedding).all()):
        checks["finite"] = "no"
        return Checked(checks, f"version {version} returns non-finite outputs")
    sums = np.abs(probabilities.sum(axis=1) - 1).max()
    norms = np.abs(np.linalg.norm(embedding, axis=1) - 1).max()
    checks["outputs"] = f"probabilities sum to 1 within {sums:.1e}, embeddings unit length within {norms:.1e}"
    if sums > 1e-3 or norms > 1e-3:
        return Checked(checks, f"version {version} is not a shopvision model: {checks['outputs']}")
    session = ort.InferenceSession(str(files.model_dir / str(version) / MODEL_FILE), providers=["CPUExecutionProvider"])
    expected_probabilities, expected_embedding = session.run([PROBABILITIES, EMBEDDING], {PIXELS: pixels})
    difference = max(float(np.abs(probabilities - expected_probabilities).max()),
                     float(np.abs(embedding - expected_embedding).max()))
    checks["parity"] = f"max |served - onnxruntime| = {difference:.1e} on 4 fixed images (tolerance {PARITY_TOLERANCE})"
    if difference > PARITY_TOLERANCE:
        return Checked(checks, f"version {version} does not serve what its model.onnx computes: {checks['parity']}")
    return Checked(checks)
