"""A tritonserver's process tree from /proc (Linux): its memory, and its CPU time by model."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (the server and its Python-backend stubs)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # the process ended while we looked
        children.setdefault(int(fields["PPid"]), []).append(int(status.parent.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds_by_model(server_pid: int) -> dict[str, float]:
    """User + system CPU seconds so far: "tritonserver" for the server itself, and each Python-backend
    model's stubs (all its instances) under the model's name, from the stub's model.py path."""
    seconds: dict[str, float] = {}
    for member in process_tree(server_pid):
        try:
            used = cpu_seconds(member)
            name = python_model(member) or "tritonserver"
        except OSError:
            continue
        seconds[name] = seconds.get(name, 0.0) + used
    return seconds


def python_model(pid: int) -> str | None:
    """The model a Python-backend stub serves, from the model.py path on its command line; None for others."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    model_files = [Path(argument.decode()) for argument in arguments if argument.endswith(b"model.py")]
    return model_files[0].parent.parent.name if model_files else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may hold spaces: state is field 3, utime and stime 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total
