"""The issue's targets, each a ratio of two points measured next to each other, over several rounds.

On a shared VM the same point drifts by 20-30 % within one run, as much as the gaps the targets
measure. So every server stays up for the whole section, each round measures every point once,
each ratio divides two points of the same round (taken seconds apart), and every second round runs the
steps in reverse so that a steady drift pushes as many rounds one way as the other. The report
gives each ratio's median over the rounds and its range.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import compare, processes
from benchmarks.in_process import measure_in_process
from benchmarks.kserve_http import INFER_PATH, classify_request
from benchmarks.loadgen import RequestBuilder, closed_loop, http_connection, triton_grpc_connection
from shopvision import contract
from shopvision.server.tritonserver import LocalTritonServer


@dataclass(frozen=True)
class Target:
    name: str
    ratios: list[float]
    """One per round."""
    met: Callable[[float], bool] | None
    """None: reported, not a target."""

    @property
    def median(self) -> float:
        return round(statistics.median(self.ratios), 2)


def measure_rounds(repository: Path, int8_repository: Path | None, images: list[bytes], input_data: Path,
                   work: Path, settings: dict, *, scratch: Path) -> list[dict]:
    """Rounds of: served gRPC c=1 and c=8 (perf_analyzer) on the shipped CPU configuration and on each engine it
    is compared with, the in-process baselines, int8 served at c=8, and, at each comparison concurrency, Triton
    over HTTP and over gRPC then the naive server on each engine, all through the same closed-loop client.
    Logs and CSVs go to ``work``; the engine variants' repositories are built under ``scratch``."""
    model = repository / contract.RESNET_MODEL / "1" / contract.MODEL_FILE
    label = "x".join(str(side) for side in settings["sizes"][0])
    other_engines = settings["engines_compared"]
    with contextlib.ExitStack() as servers:
        fp32 = servers.enter_context(compare.triton(repository, work / "tritonserver-paired.log"))
        engine_servers = {name: servers.enter_context(compare.triton(
            compare.variant_repository(repository, scratch / "paired", name), work / f"tritonserver-paired-{name}.log"))
            for name in other_engines}
        int8 = (servers.enter_context(compare.triton(int8_repository, work / "tritonserver-paired-int8.log"))
                if int8_repository else None)
        naive = {engine: servers.enter_context(compare.naive_server(model, work / f"naive-server-{engine}.log",
                                                                    engine=engine))
                 for engine in (contract.ENGINES[0], *other_engines)}

        def served(server: LocalTritonServer, name: str, concurrency: int) -> Callable[[], dict]:
            return lambda: compare.perf_point(server, model=contract.ENSEMBLE_MODEL, protocol="grpc",
                                              input_data=input_data, concurrency=concurrency,
                                              csv_path=work / f"pa-paired-{name}-{concurrency}.csv",
                                              settings=settings)

        def accounted(server: LocalTritonServer, name: str, concurrency: int) -> Callable[[], dict]:
            """The served point plus the CPU each process spent on it and Triton's own timings, per image."""
            def measure() -> dict:
                server_before = processes.cpu_seconds_by_model(server.pid)
                client_before = _waited_children_cpu_seconds()
                counters_before = {model: compare.model_counters(server, model) for model in ACCOUNTED_MODELS}
                point = served(server, name, concurrency)()
                during = {model: compare.model_counters(server, model) - before
                          for model, before in counters_before.items()}
                images = during[contract.RESNET_MODEL].images
                spent = {process: seconds - server_before.get(process, 0.0)
                         for process, seconds in processes.cpu_seconds_by_model(server.pid).items()}
                spent["perf_analyzer"] = _waited_children_cpu_seconds() - client_before
                return {**point, "core_ms_per_image": {process: round(seconds * 1000 / images, 1)
                                                       for process, seconds in spent.items()},
                        "triton_ms_per_image": {model: {stage: round(ns / 1e6 / max(counters.images, 1), 2)
                                                        for stage, ns in (("input", counters.input_ns),
                                                                          ("compute", counters.compute_ns),
                                                                          ("output", counters.output_ns))}
                                                for model, counters in during.items()}}
            return measure

        def http(target: str, url: str, build: RequestBuilder, concurrency: int) -> Callable[[], dict]:
            return lambda: asdict(closed_loop(target, http_connection(url, build), images, concurrency=concurrency,
                                              requests=settings["compare_requests"]))

        def naive_accounted(engine: str, concurrency: int) -> Callable[[], dict]:
            """The naive server over HTTP, with the CPU its one process spent per image."""
            server = naive[engine]

            def measure() -> dict:
                before = processes.cpu_seconds(server.pid)
                point = http(f"naive {engine}", server.url, lambda image: ("/classify", {}, image), concurrency)()
                images = point["requests"] + concurrency  # the measured requests and each worker's warm-up
                return {**point, "core_ms_per_image": {"naive server": round(
                    (processes.cpu_seconds(server.pid) - before) * 1000 / images, 1)}}
            return measure

        steps: list[tuple[str, Callable[[], dict]]] = [
            ("grpc_c1", served(fp32, "fp32", 1)),
            *[(f"{name}_c1", served(server, name, 1)) for name, server in engine_servers.items()],
            ("in_process", lambda: asdict(measure_in_process(model, images, label, settings["repeats"]))),
            ("grpc_c8", accounted(fp32, "fp32", 8)),
            *[(f"{name}_c8", accounted(server, name, 8)) for name, server in engine_servers.items()],
            *([("int8_c8", served(int8, "int8", 8))] if int8 else []),
        ]
        for concurrency in settings["compare_concurrency"]:
            steps += [(f"http_triton_c{concurrency}",
                       http("triton http", fp32.http_url, lambda image: (INFER_PATH, *classify_request(image)),
                            concurrency)),
                      (f"grpc_triton_c{concurrency}",
                       lambda c=concurrency: asdict(closed_loop(
                           "triton grpc", triton_grpc_connection(fp32.grpc_url.removeprefix("grpc://")), images,
                           concurrency=c, requests=settings["compare_requests"]))),
                      (f"http_naive_c{concurrency}", naive_accounted(contract.ENGINES[0], concurrency)),
                      *[(f"http_naive_{engine}_c{concurrency}", naive_accounted(engine, concurrency))
                        for engine in other_engines]]
        rounds = []
        for index in range(settings["rounds"]):
            measured = {}
            for name, measure in steps if index % 2 == 0 else reversed(steps):
                measured[name] = measure()
                print(f"round {index + 1} {name}: {_summary(measured[name])}", flush=True)
            rounds.append(measured)
    return rounds


ACCOUNTED_MODELS = (contract.PREPROCESS_MODEL, contract.RESNET_MODEL, contract.QUALITY_MONITOR_MODEL)
"""The ensemble's steps, whose input, compute and output times Triton's statistics give per image."""


def _waited_children_cpu_seconds() -> float:
    """CPU of the finished child processes (each perf_analyzer run) of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(point: dict) -> str:
    if "compute_ceiling_img_s" in point:
        return f"ceiling {point['compute_ceiling_img_s']} img/s, single image {point['pipeline_single_image_ms']} ms"
    return f"{point['throughput']:.1f} img/s p50 {point['p50_ms']:.0f} ms p99 {point['p99_ms']:.0f} ms"


def compared_engines(rounds: list[dict]) -> list[str]:
    """The engines a run served beside the shipped configuration's (its ``<engine>_c8`` points)."""
    return [engine for engine in contract.ENGINES[1:] if f"{engine}_c8" in rounds[0]]


NAIVE_BOUNDS = {"throughput": 1.10, "p99_ms": 0.90, "p50_ms": 1.00}
"""Issue 23's bounds on served ÷ naive: img/s at least (under load), p99 at most (under load), p50 at most (c=1)."""


def naive_target_name(protocol: str, concurrency: int, metric: str) -> str:
    """The name of a served-against-naive target: README and docs quote these by name (tests/test_docs.py)."""
    if metric == "throughput":
        return (f"served ≥ {NAIVE_BOUNDS[metric]:.2f}× the naive server's img/s, {protocol} c={concurrency}"
                if concurrency > 1 else f"served img/s ÷ the naive server's, {protocol} c={concurrency}")
    return (f"served {metric.removesuffix('_ms')} ≤ {NAIVE_BOUNDS[metric]:.2f}× the naive server's, "
            f"{protocol} c={concurrency}")


def targets(rounds: list[dict]) -> list[Target]:
    """Issue 23's targets on a 2-core CPU machine, per round, and the comparisons the engine choice rests on."""
    def per_round(numerator: Callable[[dict], float], denominator: Callable[[dict], float]) -> list[float]:
        return [compare.ratio(numerator(r), denominator(r)) for r in rounds]

    def against_naive(point: str, naive: str, metric: str) -> list[float]:
        return per_round(lambda r: r[point][metric], lambda r: r[naive][metric])

    found = []
    concurrencies = sorted(int(name.removeprefix("http_triton_c")) for name in rounds[0]
                           if name.startswith("http_triton_c"))
    for c in concurrencies:
        for protocol in ("HTTP", "gRPC"):
            point = f"{protocol.lower()}_triton_c{c}"
            if c > 1:
                found += [Target(naive_target_name(protocol, c, "throughput"),
                                 against_naive(point, f"http_naive_c{c}", "throughput"),
                                 lambda value: value >= NAIVE_BOUNDS["throughput"]),
                          Target(naive_target_name(protocol, c, "p99_ms"),
                                 against_naive(point, f"http_naive_c{c}", "p99_ms"),
                                 lambda value: value <= NAIVE_BOUNDS["p99_ms"])]
            else:
                found += [Target(naive_target_name(protocol, c, "p50_ms"),
                                 against_naive(point, f"http_naive_c{c}", "p50_ms"),
                                 lambda value: value <= NAIVE_BOUNDS["p50_ms"]),
                          Target(naive_target_name(protocol, c, "throughput"),
                                 against_naive(point, f"http_naive_c{c}", "throughput"), None)]
        found += [Target(f"served img/s ÷ the naive server's on {engine}, HTTP c={c}",
                         against_naive(f"http_triton_c{c}", f"http_naive_{engine}_c{c}", "throughput"), None)
                  for engine in compared_engines(rounds)]
    found += [
        Target("served fp32 gRPC c=8 ≥ 0.95× the in-process compute ceiling",
               per_round(lambda r: r["grpc_c8"]["throughput"], lambda r: r["in_process"]["compute_ceiling_img_s"]),
               lambda value: value >= 0.95),
        *([Target("the naive server's img/s ÷ the in-process compute ceiling, HTTP c=8",
                  per_round(lambda r: r["http_naive_c8"]["throughput"],
                            lambda r: r["in_process"]["compute_ceiling_img_s"]), None)]
          if "http_naive_c8" in rounds[0] else []),
        Target("served fp32 gRPC c=8 ÷ the engine alone on every core (in process)",
               per_round(lambda r: r["grpc_c8"]["throughput"], lambda r: r["in_process"]["raw_ort_img_s"]),
               None),
        Target("served gRPC c=1 p50 ÷ the in-process single image",
               per_round(lambda r: r["grpc_c1"]["p50_ms"], lambda r: r["in_process"]["pipeline_single_image_ms"]),
               None),
    ]
    for engine in compared_engines(rounds):
        for c in (1, 8):
            found += [Target(f"{engine} ÷ onnxruntime, served img/s, gRPC c={c}",
                             per_round(lambda r, c=c, e=engine: r[f"{e}_c{c}"]["throughput"],
                                       lambda r, c=c: r[f"grpc_c{c}"]["throughput"]), None),
                      Target(f"{engine} ÷ onnxruntime, served p99, gRPC c={c}",
                             per_round(lambda r, c=c, e=engine: r[f"{e}_c{c}"]["p99_ms"],
                                       lambda r, c=c: r[f"grpc_c{c}"]["p99_ms"]), None)]
    if "int8_c8" in rounds[0]:
        found.append(Target("int8 served ≥ 2.5× fp32 served (gRPC c=8)",
                            per_round(lambda r: r["int8_c8"]["throughput"], lambda r: r["grpc_c8"]["throughput"]),
                            lambda value: value >= 2.5))
    return found


def _verdict(target: Target) -> str:
    if target.met is None:
        return "(reported)"
    return "yes" if target.met(target.median) else "**no**"


def median_throughputs(rounds: list[dict]) -> dict[str, float]:
    """Every served point's img/s, median over the rounds."""
    return {name: round(statistics.median(r[name]["throughput"] for r in rounds), 1)
            for name in rounds[0] if name != "in_process"}


def report_lines(rounds: list[dict]) -> list[str]:
    count = f"{len(rounds)} rounds, every second one in reverse order" if len(rounds) > 1 else "1 round"
    lines = [f"Each ratio divides two points of the same round ({count}, see `benchmarks/paired.py`); the table "
             "gives the median and the range over rounds.", "",
             "| target | median | range over rounds | met (median) |", "|---|---|---|---|"]
    for target in targets(rounds):
        lines.append(f"| {target.name} | {target.median} | {min(target.ratios)}–{max(target.ratios)} | "
                     f"{_verdict(target)} |")
    if any(r["in_process"].get("single_image_statistic", "mean") != "median" for r in rounds):
        lines += ["", "The c=1 ratio of these results compares perf_analyzer's p50 with the in-process *mean* "
                  "single-image time: they predate measuring its median."]
    lines += ["", *cpu_lines(rounds)]
    lines += ["", "<details><summary>Every point of every round</summary>", "",
              "| round | point | img/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|---|"]
    for index, measured in enumerate(rounds, start=1):
        for name, point in measured.items():
            if name == "in_process":
                lines.append(f"| {index} | in-process: compute ceiling / engine alone / single image | "
                             f"{point['compute_ceiling_img_s']} / {point['raw_ort_img_s']} | "
                             f"{point['pipeline_single_image_ms']} | | |")
            else:
                failed = point.get("failed", point.get("failures", "not counted"))
                mark = "†" if isinstance(failed, int) and failed else ""
                lines.append(f"| {index} | {name}{mark} | {point['throughput']:.1f} | {point['p50_ms']:.0f} | "
                             f"{point['p99_ms']:.0f} | {failed} |")
    return lines + ["", "</details>"]


def cpu_lines(rounds: list[dict]) -> list[str]:
    """Where the CPU goes per served image at c=8, for each served configuration and the naive server, against the
    in-process cost of the same work; then Triton's own timings of each step."""
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    def per_process(point: str) -> dict[str, float]:
        names = {name for r in rounds for name in r[point]["core_ms_per_image"]}
        return {name: median([r[point]["core_ms_per_image"].get(name, 0.0) for r in rounds]) for name in names}

    columns = {"cpu (onnxruntime)": per_process("grpc_c8"),
               **{f"cpu on {engine}": per_process(f"{engine}_c8") for engine in compared_engines(rounds)}}
    if "core_ms_per_image" in rounds[0].get("http_naive_c8", {}):
        columns["naive server (HTTP)"] = per_process("http_naive_c8")
    in_process = {"preprocess": median([r["in_process"]["preprocess_core_ms"] for r in rounds]),
                  "resnet50": median([r["in_process"]["ort_core_ms"] for r in rounds])}
    cores = os.cpu_count() or 1
    throughput = statistics.median(r["grpc_c8"]["throughput"] for r in rounds)
    processes_seen = sorted({name for column in columns.values() for name in column})
    lines = ["Where the CPU goes per image at c=8 (core-ms from /proc, median over rounds). Served: gRPC through "
             "perf_analyzer, by process: tritonserver holds the front end (HTTP/gRPC, the ensemble scheduler, the "
             "response) and its side of the shared-memory hand-offs; each Python model's stubs hold its own work and "
             "their side. The naive server: its one process over HTTP (its client runs in the benchmark's process, "
             "not counted). In process: the same decoding and engine work (one thread at batch 8) without a server.",
             "", "| process | " + " | ".join(columns) + " | in process |",
             "|---|" + "---|" * (len(columns) + 1)]
    for name in processes_seen:
        lines.append(f"| {name} | " + " | ".join(str(column.get(name, "–")) for column in columns.values())
                     + f" | {in_process.get(name, '')} |")
    totals = {label: round(sum(column.values()), 1) for label, column in columns.items()}
    in_process_total = round(sum(in_process.values()), 1)
    lines.append("| total | " + " | ".join(str(total) for total in totals.values()) + f" | {in_process_total} |")
    total = totals["cpu (onnxruntime)"]
    busy = throughput * total / 1000
    lines += ["", f"At the median {throughput:.1f} img/s the shipped configuration's processes keep {busy:.2f} of the "
              f"{cores} cores busy. Served, the work costs {total / in_process_total:.2f}× its in-process CPU, and the "
              f"cores are {busy / cores:.0%} busy: together about {in_process_total / total * busy / cores:.2f}× the "
              "compute ceiling, the distance the ceiling target measures."]
    timings = [r["grpc_c8"]["triton_ms_per_image"] for r in rounds if "triton_ms_per_image" in r["grpc_c8"]]
    if timings:
        lines += ["", "Triton's own timings per image at gRPC c=8 (its statistics, median over rounds; wall time, not "
                  "CPU): input is handing the step its tensors (for a Python model, into shared memory), output taking "
                  "its results back.", "", "| step | input ms | compute ms | output ms |", "|---|---|---|---|"]
        for model in timings[0]:
            stages = [statistics.median(t[model][stage] for t in timings) for stage in ("input", "compute", "output")]
            lines.append(f"| {model} | " + " | ".join(f"{value:.2f}" for value in stages) + " |")
    return lines
