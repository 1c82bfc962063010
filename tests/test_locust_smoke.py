"""CI smoke of the Locust users: Triton over both protocols and the search service, headless, CSV output."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.search_service import ServiceThread
from tests.support.servers import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
LOCUST = Path(os.environ.get("LOCUST_BIN", ROOT / ".venv-locust" / "bin" / "locust"))


def locust(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not LOCUST.exists():
        pytest.fail(f"{LOCUST} not found: run `make locust-venv` (Locust needs its own environment)")
    # --stop-timeout lets users finish the gRPC call in flight instead of killing the greenlet inside it.
    return subprocess.run([LOCUST, "--headless", "--stop-timeout", "10", "--image-size", "160x120", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as stream:
        return {row["Type"]: row for row in csv.DictReader(stream) if row["Name"] != "Aggregated"}


def test_every_user_sends_real_images_without_failures(triton: RunningServer, search_service: ServiceThread,
                                                        tmp_path: Path) -> None:
    result = locust("-f", str(ROOT / "benchmarks" / "locustfile.py"), "--host", triton.http_url,
                    "--grpc-url", triton.grpc_address, "--api-url", search_service.url, "-u", "6", "-r", "6",
                    "--run-time", "8s", "--csv", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "run_stats.csv").open() as stream:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stream) if row["Name"] != "Aggregated"}
    assert {kind for kind, _ in rows} == {"gRPC", "HTTP", "search API"}
    assert {name for kind, name in rows if kind == "search API"} == {"shopvision classify top-5",
                                                                   "search API /v1/search k=12"}
    for row in rows.values():
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, row


def test_step_load_shape_adds_users_in_steps(triton: RunningServer, search_service: ServiceThread,
                                            tmp_path: Path) -> None:
    result = locust("-f", f"{ROOT / 'benchmarks' / 'locustfile.py'},{ROOT / 'benchmarks' / 'locust_step_shape.py'}",
                    "GrpcUser", "SearchApiUser", "--host", triton.http_url, "--grpc-url", triton.grpc_address,
                    "--api-url", search_service.url,
                    "--step-users", "1", "--step-seconds", "3", "--steps", "2", "--run-time", "30s",
                    "--csv", str(tmp_path / "step"), "--csv-full-history", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "step_stats_history.csv").open() as stream:
        users = {int(row["User Count"]) for row in csv.DictReader(stream)}
    assert {1, 2} <= users and max(users) == 2
    step = stats(tmp_path / "step_stats.csv")
    assert int(step["gRPC"]["Failure Count"]) == 0 and int(step["search API"]["Failure Count"]) == 0
