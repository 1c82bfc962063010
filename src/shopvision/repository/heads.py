"""Promote a trained categories head on a running server without dropping requests, or roll back.

The steps are :mod:`shopvision.repository.promotion`'s, as for resnet50 versions; this is what is a head's own.
Promoting head N while head C serves (or none does):
1. pin the ensemble's files to what the server runs now (its head and its resnet50 version: reloading the
   ensemble must not bring in a newer resnet50 build unchecked), then load categories with versions [C, N];
2. check N: ready, trained on the embeddings the server computes now (same ResNet50 sha256), finite
   probabilities summing to 1 over its own categories, the embedding passed through unchanged, and the
   same outputs as onnxruntime running N's model.onnx in this process on the server's embeddings of
   fixed images;
3. only then switch the ensemble to N (its step and its labelled output; one atomic reload), and unload C.
Promoting version 0 removes the head: the ensemble serves as it does before any head is trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shopvision.client import Client
from shopvision.contract import (
    CATEGORIES_MODEL,
    CATEGORISED_EMBEDDING,
    CATEGORY_PROBABILITIES,
    EMBEDDING,
    ENSEMBLE_MODEL,
    MODEL_FILE,
)
from shopvision.repository import promotion
from shopvision.repository.files import CategoryHeads, ModelRepository
from shopvision.repository.lifecycle import pin_serving_version, serving_version
from shopvision.repository.promotion import Checked, PromotionError, Target
from shopvision.repository.records import PromotionRecord
from shopvision.samples import product_jpeg

NO_HEAD = 0
"""The version number that stands for "no head": promoting it removes the categories step."""
HEAD_PARITY_TOLERANCE = 1e-5
"""Largest |served - in-process| probability allowed: the same graph on the same embeddings."""


class Heads(Target):
    """The categories heads as a promotion target; version 0 is "no head"."""

    subject = "categories head"
    files: CategoryHeads

    def __init__(self, repository: Path) -> None:
        super().__init__(CategoryHeads(repository))

    def serving(self, client: Client) -> int:
        """The head version in the ensemble the server has loaded (its config, not the files), 0 for none."""
        steps = client.model_config(ENSEMBLE_MODEL).get("ensemble_scheduling", {}).get("step", [])
        return next((int(step.get("model_version", NO_HEAD)) for step in steps
                     if step.get("model_name") == CATEGORIES_MODEL), NO_HEAD)

    def require_built(self, version: int) -> None:
        if version != NO_HEAD and version not in self.files.built_versions():
            raise PromotionError(f"categories head {version} is not built in {self.files.root} (built: "
                                 f"{self.files.built_versions()}); train one with `shopvision categories train`")

    def already(self, version: int) -> str:
        return f"head {version} is already serving" if version else "no head is serving already"

    def hold(self, client: Client, current: int) -> None:
        """The ensemble's files say what the server runs (its head, its resnet50 version): reloading the ensemble
        must not bring in a newer resnet50 build, which goes through its own promotion."""
        self.files.serve(current or None)
        files = ModelRepository(self.files.root)
        pin_serving_version(files, serving_version(client, files))

    def check(self, client: Client, version: int) -> Checked:
        return check_head(client, self.files, version)

    def switch(self, client: Client, version: int) -> None:
        self.files.serve(version or None)
        client.load_model(ENSEMBLE_MODEL)


def promote_head(repository: Path, version: int, *, url: str, admin_key: str) -> PromotionRecord:
    """Make head ``version`` (0: none) what the ensemble serves on the server at ``url``, checking it first."""
    return promotion.promote(Heads(repository), version, url=url, admin_key=admin_key)


def rollback_head(repository: Path, *, url: str, admin_key: str) -> PromotionRecord:
    """Serve again the head (or no head) that served before the last successful promotion."""
    return promotion.rollback(Heads(repository), url=url, admin_key=admin_key)


def check_head(client: Client, heads: CategoryHeads, version: int) -> Checked:
    """Whether head ``version`` may serve: each check's outcome, and the first failure's reason."""
    import onnxruntime as ort

    checks: dict[str, str] = {}
    if not client.is_model_ready(CATEGORIES_MODEL, version=version):
        checks["ready"] = "no"
        return Checked(checks, f"categories head {version} did not become ready (see the server log)")
    checks["ready"] = "yes"
    trained_on, weights = heads.provenance(version).embeddings, client.provenance()
    checks["embeddings"] = f"trained on {trained_on.describe()}, the server runs {weights.describe()}"
    if trained_on.model_sha256 != weights.model_sha256:
        return Checked(checks, f"head {version} was trained on another model's embeddings ({checks['embeddings']}): "
                               "train it again against this server")
    embeddings = client.embed([product_jpeg(seed, size=(320, 240)) for seed in range(4)])
    served = client.infer_tensors(CATEGORIES_MODEL, {EMBEDDING: embeddings},
                                  [CATEGORY_PROBABILITIES, CATEGORISED_EMBEDDING], version=version)
    probabilities = served[CATEGORY_PROBABILITIES]
    categories = heads.categories(version)
    if not np.isfinite(probabilities).all() or probabilities.shape != (len(embeddings), len(categories)):
        checks["outputs"] = f"shape {probabilities.shape}, finite: {bool(np.isfinite(probabilities).all())}"
        return Checked(checks, f"head {version} does not answer one finite probability per category: "
                               f"{checks['outputs']}")
    if not np.array_equal(served[CATEGORISED_EMBEDDING], embeddings):
        checks["outputs"] = "the embedding does not pass through unchanged"
        return Checked(checks, f"head {version} changes the embedding it should pass through to the ensemble's output")
    sums = float(np.abs(probabilities.sum(axis=1) - 1).max())
    checks["outputs"] = f"{len(categories)} categories, probabilities sum to 1 within {sums:.1e}"
    if sums > 1e-3:
        return Checked(checks, f"head {version} is not a softmax: {checks['outputs']}")
    session = ort.InferenceSession(str(heads.model_dir / str(version) / MODEL_FILE), providers=["CPUExecutionProvider"])
    difference = float(np.abs(probabilities - session.run([CATEGORY_PROBABILITIES], {EMBEDDING: embeddings})[0]).max())
    checks["parity"] = (f"max |served - onnxruntime| = {difference:.1e} on 4 fixed images "
                        f"(tolerance {HEAD_PARITY_TOLERANCE})")
    if difference > HEAD_PARITY_TOLERANCE:
        return Checked(checks, f"head {version} does not serve what its model.onnx computes: {checks['parity']}")
    return Checked(checks)
