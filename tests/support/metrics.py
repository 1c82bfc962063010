"""Read Triton's Prometheus metrics from the real /metrics endpoint, and its exact statistics to compare them with."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable

import tritonclient.http as httpclient

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$')


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition, keyed by its name and labels as written (``name{a="b"}``)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_and_labels, value = line.rsplit(" ", 1)
            found[name_and_labels] = float(value)
    return found


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def wait_for_metric(url: str, name: str, minimum: float, *, timeout_s: float = 20.0, **labels: str) -> float:
    """``name``'s value once it reaches ``minimum`` (a scrape may lag what the server has counted), or the last
    value seen after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = metric(scrape(url), name, **labels)
        if value >= minimum or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def inference_counts(http_address: str, model: str) -> tuple[int, int]:
    """(inferences, executions) of ``model`` from Triton's statistics extension: exact, and counted together, but
    only once an execution has ended, after its responses were sent (see ``counts_reaching``).

    A scraped counter is compared with these read on both sides of the scrape, never with a number of its own:
    between two reads, another client's requests may be counted too (see ``assert_counter_between``)."""
    with httpclient.InferenceServerClient(http_address) as client:
        stats = client.get_inference_statistics(model)
    (entry,) = stats["model_stats"]
    return int(entry["inference_count"]), int(entry["execution_count"])


def counts_reaching(http_address: str, model: str, inferences: int, *, timeout_s: float = 20.0) -> tuple[int, int]:
    """``inference_counts`` once the inferences reach ``inferences``, or as they are after ``timeout_s``.

    A client holding every answer may read the statistics before the last execution is counted: the Python backend
    reports an execution when ``execute`` returns, after its responses are on their way (the suite saw 14 of 16,
    once, on a busy machine). Both counts are updated together, so the executions are final with the inferences."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = inference_counts(http_address, model)
        if counts[0] >= inferences or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def assert_counter_between(url: str, name: str, floor: int, ceiling: Callable[[], int], **labels: str) -> float:
    """The scraped ``name`` has caught up with ``floor`` (a statistic read before) and does not pass
    ``ceiling()`` (the same statistic read after the scrape): equal to the statistic where nothing else ran."""
    seen = wait_for_metric(url, name, floor, **labels)
    assert floor <= seen <= ceiling(), (name, floor, seen)
    return seen
