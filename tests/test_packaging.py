"""What the built wheel carries besides modules: a type checker's marker and the search page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_typed_marker_and_the_page(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True)
    (wheel,) = (tmp_path / "dist").glob("shopvision-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"shopvision/py.typed", "shopvision/api/static/index.html"} <= names


def test_the_sdk_allows_the_tritonclient_releases_it_was_tested_with() -> None:
    """pyproject.toml's range for the SDK's tritonclient is what benchmarks/results/sdk-compat found passing: from
    the lowest passing release to below the minor release after the highest, every release tested inside it
    passing; the bench extra keeps 2.51.0, whose wheel carries perf_analyzer."""
    import json

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (sdk,) = [Requirement(text) for text in project["dependencies"] if text.startswith("tritonclient")]
    report = json.loads((ROOT / "benchmarks" / "results" / "sdk-compat" / "results.json").read_text())
    tested = {Version(version): verdict for version, verdict in report["verdicts"].items()}
    passing = sorted(version for version, verdict in tested.items() if verdict == "passes")
    lowest, highest = passing[0], passing[-1]
    assert str(sdk.specifier) == f"<{highest.major}.{highest.minor + 1},>={lowest.major}.{lowest.minor}"
    assert all(tested[version] == "passes" for version in tested if version in sdk.specifier)
    assert {"grpc", "http"} <= sdk.extras
    assert f"tritonclient {lowest} to {highest}, each release checked" in " ".join(
        (ROOT / "docs" / "client.md").read_text().split())
    assert any(text.startswith("tritonclient[all]==2.51.0") for text in project["optional-dependencies"]["bench"])
