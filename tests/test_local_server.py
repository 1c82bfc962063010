"""The local tritonserver's helpers that need no server: the ports it is handed."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from shopvision.server.tritonserver import free_ports


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOPVISION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "free-ports.json"


def test_no_port_is_handed_out_twice_while_servers_may_still_be_binding_them(registry: Path) -> None:
    """The kernel's free ports repeat (each is free again once probed): 600 asks, as a suite's workers make
    side by side, would get some port twice (about 13 repeats expected among ~14,000 ports) and two servers the
    same one."""
    handed = [port for _ in range(200) for port in free_ports(3)]
    assert len(set(handed)) == len(handed)
    assert sorted(int(port) for port in json.loads(registry.read_text())) == sorted(handed)
    for port in handed[:30]:  # free when handed
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_ports_handed_out_over_two_minutes_ago_are_forgotten_and_a_broken_record_is_started_afresh(
        registry: Path) -> None:
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"40001": time.time() - 121, "40003": time.time()}))
    (port,) = free_ports(1)
    recorded = json.loads(registry.read_text())
    assert set(recorded) == {"40003", str(port)}
    for broken in ("not json", '["a list"]', '{"40001": "not a time"}'):
        registry.write_text(broken)
        (again,) = free_ports(1)
        assert set(json.loads(registry.read_text())) == {str(again)}, broken


def test_without_a_usable_record_ports_are_only_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cache").write_text("a file where the folder should be")
    monkeypatch.setenv("SHOPVISION_CACHE_DIR", str(tmp_path / "cache"))
    ports = free_ports(3)
    assert len(set(ports)) == 3
