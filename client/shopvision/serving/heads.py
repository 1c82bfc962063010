"""Promote a trained categories head on a running server without dropping requests, or roll back.

The same path as resnet50 versions (:mod:`shopvision.serving.lifecycle`): explicit model control, the
admin key, the repository on this filesystem. Promoting head N while head C serves (or none does):
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

from dataclasses import asdict
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
    RESNET50_EMBEDDING_DIM,
)
from shopvision.errors import PermissionDeniedError, ShopvisionError
from shopvision.samples import product_jpeg
from shopvision.serving.lifecycle import (
    PromotionError,
    PromotionReport,
    pin_serving_version,
    repository_operations,
    served_before_last_promotion,
    serving_version,
)
from shopvision.serving.repository import CategoryHeads, ModelRepository

NO_HEAD = 0
"""The version number that stands for "no head": promoting it removes the categories step."""
HEAD_PARITY_TOLERANCE = 1e-5
"""Largest |served - in-process| probability allowed: the same graph on the same embeddings."""


def promote_head(repository: Path, version: int, *, url: str, admin_key: str) -> PromotionReport:
    """Make head ``version`` (0: none) what the ensemble serves on the server at ``url``, checking it first."""
    heads = CategoryHeads(repository)
    if version != NO_HEAD and version not in heads.built_versions():
        raise PromotionError(f"categories head {version} is not built in {repository} (built: "
                             f"{heads.built_versions()}); train one with `shopvision categories train`")
    with Client(url, admin_key=admin_key) as client:
        report = PromotionReport(version=version, previous=_served_head(client), promoted=False)
        if report.version == report.previous:
            report.reason = f"head {version} is already serving" if version else "no head is serving already"
            return report
        with repository_operations():
            _switch(client, heads, report)
    heads.record(asdict(report))
    return report


def rollback_head(repository: Path, *, url: str, admin_key: str) -> PromotionReport:
    """Serve again the head (or no head) that served before the last successful promotion."""
    return promote_head(repository, served_before_last_promotion(CategoryHeads(repository).history()), url=url,
                        admin_key=admin_key)


def _served_head(client: Client) -> int:
    """The head version in the ensemble the server has loaded (its config, not the files), 0 for none."""
    steps = client.model_config(ENSEMBLE_MODEL).get("ensemble_scheduling", {}).get("step", [])
    return next((int(step.get("model_version", NO_HEAD)) for step in steps
                 if step.get("model_name") == CATEGORIES_MODEL), NO_HEAD)


def _switch(client: Client, heads: CategoryHeads, report: PromotionReport) -> None:
    """Steps 1-3 of the module docstring; ``report`` says whether the new head serves now, and why not."""
    current, version = report.previous, report.version
    if version == NO_HEAD:
        heads.serve(None)
        _pin_resnet(client, heads)
        client.load_model(ENSEMBLE_MODEL)
        report.promoted = True
        return
    heads.serve(current or None)
    _pin_resnet(client, heads)
    heads.load_versions([v for v in (current, version) if v])
    try:
        client.load_model(CATEGORIES_MODEL)
    except PermissionDeniedError:
        raise
    except ShopvisionError as error:  # the new head failed to load; what served still serves
        report.checks["load"] = str(error)
        failure: str | None = f"head {version} failed to load: {error}"
    else:
        failure = check_head(client, heads, version, report.checks)
    if failure is not None:
        report.reason = failure
        if current:
            heads.load_versions([current])
            client.load_model(CATEGORIES_MODEL)
        return
    heads.serve(version)
    client.load_model(ENSEMBLE_MODEL)
    heads.load_versions([version])
    client.load_model(CATEGORIES_MODEL)
    report.promoted = True


def _pin_resnet(client: Client, heads: CategoryHeads) -> None:
    """Reloading the ensemble must not bring in a newer resnet50 build: that goes through its own promotion."""
    files = ModelRepository(heads.root)
    pin_serving_version(files, serving_version(client, files))


def check_head(client: Client, heads: CategoryHeads, version: int, checks: dict[str, str]) -> str | None:
    """Why head ``version`` must not serve, or None when it passed every check (results go into ``checks``)."""
    import onnxruntime as ort

    if not client.is_model_ready(CATEGORIES_MODEL, version=version):
        checks["ready"] = "no"
        return f"categories head {version} did not become ready (see the server log)"
    checks["ready"] = "yes"
    head_provenance, weights = heads.provenance(version), client.provenance()
    trained_on = head_provenance.get("embedding_model_sha256")
    # Heads trained before backbones were a choice read ResNet50's 2048-d embeddings.
    trained_backbone = head_provenance.get("embedding_backbone", "resnet50-v1-12")
    trained_width = head_provenance.get("embedding_dim", RESNET50_EMBEDDING_DIM)
    checks["embeddings"] = (f"trained on {trained_backbone} {trained_on} ({trained_width}-d), "
                            f"the server runs {weights.backbone} {weights.model_sha256} ({weights.embedding_dim}-d)")
    if trained_on != weights.model_sha256:
        return (f"head {version} was trained on another model's embeddings ({checks['embeddings']}): "
                "train it again against this server")
    embeddings = client.embed([product_jpeg(seed, size=(320, 240)) for seed in range(4)])
    served = client.infer_tensors(CATEGORIES_MODEL, {EMBEDDING: embeddings},
                                  [CATEGORY_PROBABILITIES, CATEGORISED_EMBEDDING], version=version)
    probabilities = served[CATEGORY_PROBABILITIES]
    categories = heads.categories(version)
    if not np.isfinite(probabilities).all() or probabilities.shape != (len(embeddings), len(categories)):
        checks["outputs"] = f"shape {probabilities.shape}, finite: {bool(np.isfinite(probabilities).all())}"
        return f"head {version} does not answer one finite probability per category: {checks['outputs']}"
    if not np.array_equal(served[CATEGORISED_EMBEDDING], embeddings):
        checks["outputs"] = "the embedding does not pass through unchanged"
        return f"head {version} changes the embedding it should pass through to the ensemble's output"
    sums = float(np.abs(probabilities.sum(axis=1) - 1).max())
    checks["outputs"] = f"{len(categories)} categories, probabilities sum to 1 within {sums:.1e}"
    if sums > 1e-3:
        return f"head {version} is not a softmax: {checks['outputs']}"
    session = ort.InferenceSession(str(heads.model_dir / str(version) / MODEL_FILE), providers=["CPUExecutionProvider"])
    difference = float(np.abs(probabilities - session.run([CATEGORY_PROBABILITIES], {EMBEDDING: embeddings})[0]).max())
    checks["parity"] = (f"max |served - onnxruntime| = {difference:.1e} on 4 fixed images "
                        f"(tolerance {HEAD_PARITY_TOLERANCE})")
    if difference > HEAD_PARITY_TOLERANCE:
        return f"head {version} does not serve what its model.onnx computes: {checks['parity']}"
    return None
