"""The command's contract with scripts, without a server: --version, exit statuses, one-line errors, Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shopvision
from shopvision.cli import main as cli
from shopvision.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE
from shopvision.server.tritonserver import free_ports

# A suite started in the background by a shell (CI's `make test &`) inherits SIGINT ignored, and Python keeps an
# ignored SIGINT ignored: the command is started as `python -m` would start it, with the handler a terminal gives it
# installed first, so that Ctrl-C reaches it. The child sets it itself, after exec: Python code run between fork and
# exec (a preexec_fn) in a worker whose gRPC threads are busy once wrote gRPC's epoll error into the command's stderr
# (CI at 8209d53; 5 children of 300 in a reproduction, none of 300 this way).
AS_ON_A_TERMINAL = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('shopvision.cli.main', run_name='__main__', alter_sys=True)")


def shopvision_command(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", AS_ON_A_TERMINAL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def run(*args: str) -> tuple[int, str, str]:
    process = shopvision_command(*args)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def test_version_is_the_packages() -> None:
    code, stdout, _ = run("--version")
    assert code == 0 and stdout.strip() == f"shopvision {shopvision.__version__}"


def test_exit_statuses_say_usage_failure_and_unavailable_apart(tmp_path: Path) -> None:
    # 2: the command line is wrong, whether argparse or the command finds it.
    assert run("index", "build")[0] == EXIT_USAGE
    code, _, stderr = run("index", "sync", str(tmp_path / "feed.csv"))
    assert code == EXIT_USAGE and stderr.startswith("usage error: give the catalog to sync into"), stderr
    # 1: a well-formed command whose operation failed, said in one line.
    code, _, stderr = run("model", "build", "--template", str(tmp_path), "--repository", str(tmp_path / "out"))
    assert code == EXIT_FAILED and "is not the shopvision model repository template" in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    # 3: nothing listens there.
    (port,) = free_ports(1)  # handed to no one else, the suite's other worker included
    code, _, stderr = run("health", "--url", f"http://127.0.0.1:{port}")
    assert code == EXIT_UNAVAILABLE and "Traceback" not in stderr, stderr


def test_an_unexpected_exception_is_a_bug_and_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only shopvision's errors (and the OS's) become a line on stderr: a ValueError from a bug is not hidden
    behind an exit status."""
    def broken(args: object) -> int:
        raise ValueError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(handler=broken)
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for sub in action.choices.values():  # type: ignore[union-attr]
            sub.set_defaults(handler=broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["health"])


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.3])
def test_ctrl_c_exits_130_without_a_traceback(delay_s: float) -> None:
    """A command waiting on a server that never answers, interrupted at several points of the call: one line,
    status 130, and nothing from the client's event loop (a task destroyed while pending printed a warning once
    in 12 runs before the client unwound its loop on close)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections (the kernel does), never answers
        port = silent.getsockname()[1]
        process = shopvision_command("classify", "--url", f"http://127.0.0.1:{port}", __file__)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _pending(silent):  # the request is on the wire: not in imports
            time.sleep(0.05)
        connection, _ = silent.accept()
        with connection:  # held open, unanswered, until the command has ended
            time.sleep(delay_s)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.strip() == "interrupted", stderr


def _pending(listener: socket.socket) -> bool:
    import select

    return bool(select.select([listener], [], [], 0)[0])


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command's words (``index build``), with its parser."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        yield path
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, (*path, name))


def test_every_command_that_reports_can_report_json() -> None:
    """Only the two long-running servers print no report; a new command gets --json or is named here."""
    parser = cli.build_parser()
    without = set()
    for words in commands(parser):
        sub = parser
        for word in words:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        if "--json" not in sub._option_string_actions:
            without.add(" ".join(words))
    assert without == {"serve", "api"}
