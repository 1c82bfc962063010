"""What users run leaves a clone as it found it: built files go to build/, never into tracked files.

Runs, in a copy of the repository's tracked files, the commands behind `make serve` and `make test`
and a benchmark, each from the copy's root as a user would, then asks git what changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shopvision import contract

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as git sees it (edits and new files, not ignored ones), committed into a fresh repository."""
    copy = tmp_path_factory.mktemp("clone") / "shopvision"
    for name in git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0"):
        source = ROOT / name
        if not name or not (source.exists() or source.is_symlink()):
            continue
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    git("init", "-q", cwd=copy)
    git("add", "-A", cwd=copy)
    git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "copy", cwd=copy)
    return copy


def run(clone: Path, *command: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=timeout, check=False)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


def shopvision_cli(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "shopvision.cli.main", *args)


def wait_for_page(url: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_build_serve_test_and_benchmark_leave_the_tree_clean(clone: Path) -> None:
    run(clone, *shopvision_cli("model", "build", "--weights", "synthetic"))
    built = clone / "build" / "model_repository"
    assert (built / contract.RESNET_MODEL / "1" / contract.MODEL_FILE).is_file()
    assert not list((clone / "model_repository").rglob(contract.MODEL_FILE))

    from shopvision.server.tritonserver import free_ports

    # What `make serve` runs: Triton, then the search service over the demo catalog it indexes first.
    http, grpc, metrics, api = map(str, free_ports(4))
    serve = subprocess.Popen(
        shopvision_cli("serve", "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics, "--api",
                       "--api-port", api), cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert serve.stdout is not None
        lines = []
        for line in serve.stdout:
            lines.append(line)
            if line.startswith("search service:"):
                break
        assert lines and lines[-1].startswith(f"search service: http://127.0.0.1:{api}/"), "".join(lines)[-3000:]
        page = wait_for_page(f"http://127.0.0.1:{api}/")
        assert "shopvision" in page and "file-input" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/v1/catalog", timeout=10) as response:
            catalog = json.load(response)
        assert catalog["products"] == 60 and "Demo data" in catalog["demo"]
        serve.send_signal(signal.SIGINT)  # Ctrl-C: the service stops, then Triton
        assert serve.wait(timeout=120) == 0
    finally:
        serve.kill()

    run(clone, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_repository.py",
        "tests/test_python_models.py")
    run(clone, sys.executable, "-m", "benchmarks.catalog", "--sizes", "300", "--queries", "10",
        "--engines", "faiss-exact")
    assert (clone / "build" / "benchmarks" / "catalog" / "report.md").is_file()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""
