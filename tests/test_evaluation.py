"""``shopvision eval`` on a generated labelled set whose expected accuracy is known exactly.

With synthetic weights the accuracy means nothing, so the set is labelled from the server's own
answers: 6 images carry their top-1 class (right at top-1), 3 their third class (right at top-5
only), 3 a class outside their top-5 (wrong): top-1 = 50 %, top-5 = 75 %, exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import shopvision
from shopvision.evaluation import DatasetError, EmbeddingStats, LabelledImage, class_names, read_dataset, resolve_labels
from shopvision.samples import product_jpeg
from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def labelled(triton: RunningServer, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("labelled")
    images = [product_jpeg(8000 + seed, size=(320, 240)) for seed in range(12)]
    with shopvision.Client(triton.grpc_url) as client:
        predictions = client.classify(images, top_k=1000)
    expected_confusions: dict[str, dict[str, int]] = {}
    for index, (image, ranked) in enumerate(zip(images, predictions, strict=True)):
        if index < 6:
            label = ranked[0].label
        elif index < 9:
            label = ranked[2].label
        else:
            label = ranked[-1].label  # the least likely class: outside the top 5
        if index >= 6:
            confusions = expected_confusions.setdefault(label, {})
            confusions[ranked[0].label] = confusions.get(ranked[0].label, 0) + 1
        directory = folder / label.replace(" ", "_")
        directory.mkdir(exist_ok=True)
        (directory / f"img{index}.jpg").write_bytes(image)
    return folder, expected_confusions


def run_cli(*args: str, triton: RunningServer) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shopvision.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "SHOPVISION_URL": triton.grpc_url}, check=False)


def test_eval_reports_exact_top1_top5_and_confusions(triton, labelled, tmp_path) -> None:
    folder, expected_confusions = labelled
    result = run_cli("eval", str(folder), "--out", str(tmp_path / "out"), "--compare-url", triton.http_url,
                     triton=triton)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    grpc_report, http_report = data["reports"]
    for report in (grpc_report, http_report):
        assert (report["images"], report["top1_accuracy"], report["top5_accuracy"]) == (12, 0.5, 0.75)
        assert report["model_source"] == "synthetic" and report["images_per_s"] > 0
    confusions = {label: stats["confused_with"] for label, stats in grpc_report["per_class"].items()
                  if stats["confused_with"]}
    assert confusions == expected_confusions
    text = (tmp_path / "out" / "eval.md").read_text()
    assert "| 12 | 50.00% | 75.00% |" in text and "Synthetic weights" in text and "speed" in text


def test_csv_dataset_with_a_label_map_and_unknown_labels(triton, labelled, tmp_path) -> None:
    folder, _ = labelled
    items = read_dataset(folder)
    table = tmp_path / "shop.csv"
    table.write_text("image_path,label\n" + "".join(f"{item.path},shop-{item.label}\n" for item in items))
    unmapped = run_cli("eval", str(table), "--out", str(tmp_path / "a"), triton=triton)
    assert unmapped.returncode == 1 and "not among the model's ImageNet classes" in unmapped.stderr
    mapping = tmp_path / "map.csv"
    mapping.write_text("shop_label,imagenet_label\n" + "".join(
        f"shop-{label},{label}\n" for label in sorted({item.label for item in items})))
    mapped = run_cli("eval", str(table), "--label-map", str(mapping), "--out", str(tmp_path / "b"), triton=triton)
    assert mapped.returncode == 0, mapped.stderr
    (report,) = json.loads((tmp_path / "b" / "eval.json").read_text())["reports"]
    assert (report["top1_accuracy"], report["top5_accuracy"]) == (0.5, 0.75)


def test_embedding_drift_against_a_stored_reference(triton, labelled, tmp_path) -> None:
    folder, _ = labelled
    reference = tmp_path / "reference.npz"
    saved = run_cli("eval", str(folder), "--save-reference", str(reference), "--out", str(tmp_path / "a"),
                    triton=triton)
    assert saved.returncode == 0, saved.stderr
    same = run_cli("eval", str(folder), "--reference", str(reference), "--out", str(tmp_path / "b"), triton=triton)
    drift = json.loads((tmp_path / "b" / "eval.json").read_text())["drift"]
    assert same.returncode == 0 and drift["centre_shift_cosine_distance"] < 1e-5 and drift["spread_ratio"] == 1.0

    darker = tmp_path / "darker"
    for item in read_dataset(folder):
        target = darker / item.path.parent.name / item.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageEnhance.Brightness(Image.open(item.path)).enhance(0.4).save(target, "JPEG")
    run_cli("eval", str(darker), "--reference", str(reference), "--out", str(tmp_path / "c"), triton=triton)
    moved = json.loads((tmp_path / "c" / "eval.json").read_text())["drift"]
    assert moved["centre_shift_cosine_distance"] > 10 * max(drift["centre_shift_cosine_distance"], 1e-7)


def test_embedding_stats_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 2048)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stats = EmbeddingStats.of(vectors)
    stats.save(tmp_path / "ref.npz")
    loaded = EmbeddingStats.load(tmp_path / "ref.npz")
    assert loaded.count == 50 and loaded.spread == pytest.approx(stats.spread)
    assert loaded.drift_from(stats)["centre_shift_cosine_distance"] == pytest.approx(0, abs=1e-6)


def test_an_image_the_server_cannot_read_counts_as_a_miss(triton, labelled, tmp_path) -> None:
    folder, _ = labelled
    copy = tmp_path / "with-a-broken-photo"
    shutil.copytree(folder, copy)
    first_class = sorted(path for path in copy.iterdir() if path.is_dir())[0]
    (first_class / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated upload")
    result = run_cli("eval", str(copy), "--out", str(tmp_path / "out"), triton=triton)
    assert result.returncode == 1 and "broken.jpg: FAILED" in result.stderr
    (report,) = json.loads((tmp_path / "out" / "eval.json").read_text())["reports"]
    assert report["images"] == 13 and len(report["failed"]) == 1
    assert (report["top1_accuracy"], report["top5_accuracy"]) == (round(6 / 13, 4), round(9 / 13, 4))
    assert "count as misses" in (tmp_path / "out" / "eval.md").read_text()


LABELS = (Path(__file__).resolve().parent.parent / "model_repository" / "resnet50" / "imagenet_labels.txt")


def test_imagenet_names_given_to_two_classes_are_kept_apart() -> None:
    labels = LABELS.read_text().splitlines()
    names = class_names(labels)
    assert (names[134], names[517], names[954]) == ("crane (134)", "crane (517)", "banana")
    assert len(set(names)) == len(labels) == 1000
    photo = Path("photo.jpg")
    with pytest.raises(DatasetError, match="'crane' is classes 134 and 517; use the class index"):
        resolve_labels([LabelledImage(photo, "crane")], labels, {})
    assert resolve_labels([LabelledImage(photo, "517"), LabelledImage(photo, "Banana")], labels, {}) == [517, 954]
