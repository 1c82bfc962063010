"""The chart rendered and linted by Helm's own code (helm-python-sdk), in a helper process of its own.

helm-python-sdk loads Helm as a Go shared library, whose runtime installs its own signal handlers in the process
that loads it. The suite's process also runs grpcio's threads, forks nginx and tritonserver, and relies on
Python's fault handler; a full run once died there of SIGSEGV with no trace at all. Helm therefore never loads in
the pytest process: one helper, started on first use, answers each request as a line of JSON.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import threading
from typing import Any

from tests.support import ROOT

CHART = ROOT / "deploy" / "helm" / "shopvision"

_HELPER = """
import json, sys
import helm_python

chart = helm_python.Chart.load(sys.argv[1])
for line in sys.stdin:
    request = json.loads(line)
    try:
        if request["do"] == "render":
            answer = {"rendered": chart.render(request["values"], name="shop", namespace="prod")}
        else:
            answer = {"lint": helm_python.lint(sys.argv[1], request["values"], strict=True)}
    except helm_python.HelmError as error:
        answer = {"refused": str(error)}
    print(json.dumps(answer), flush=True)
"""


class ChartRefused(Exception):
    """Helm refused to render the chart with these values (a ``fail`` in a template, a missing ``required``)."""


class _Helper:
    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen([sys.executable, "-c", _HELPER, str(CHART)], stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, text=True)
                atexit.register(self._process.kill)
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Helm helper ended (exit status {self._process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "refused" in answer:
            raise ChartRefused(answer["refused"])
        return answer


_helper = _Helper()


def render(values: dict[str, Any]) -> dict[str, str]:
    """The chart's templates rendered with ``values`` (release "shop" in namespace "prod"), by file."""
    rendered: dict[str, str] = _helper.ask({"do": "render", "values": values})["rendered"]
    return rendered


def lint(values: dict[str, Any]) -> dict[str, Any]:
    """``helm lint --strict`` with ``values``."""
    result: dict[str, Any] = _helper.ask({"do": "lint", "values": values})["lint"]
    return result
