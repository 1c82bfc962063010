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
from benchmarks.loadgen import RequestBuilder, closed_loop
from shopvision import contract
from shopvision.serving.server import LocalTritonServer


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
                   work: Path, settings: dict) -> list[dict]:
    """Rounds of: served gRPC c=1 and c=8 (the shipped CPU configuration and the python_ort stand-in),
    the in-process baselines, int8 served at c=8, and Triton then the naive server over the same HTTP
    client at each comparison concurrency."""
    model = repository / contract.RESNET_MODEL / "1" / contract.MODEL_FILE
    label = "x".join(str(side) for side in settings["sizes"][0])
    with contextlib.ExitStack() as servers:
        fp32 = servers.enter_context(compare.triton(repository, work / "tritonserver-paired.log"))
        stand_in = servers.enter_context(compare.triton(repository, work / "tritonserver-paired-stand-in.log",
                                                        compare.VARIANTS["python_ort"]))
        int8 = (servers.enter_context(compare.triton(int8_repository, work / "tritonserver-paired-int8.log"))
                if int8_repository else None)
        naive = servers.enter_context(compare.naive_server(model, work / "naive-server.log"))
        names = {id(fp32): "fp32", id(stand_in): "stand-in", id(int8): "int8"}

        def served(server: LocalTritonServer, concurrency: int) -> Callable[[], dict]:
            return lambda: compare.perf_point(server, model=contract.ENSEMBLE_MODEL, protocol="grpc",
                                              input_data=input_data, concurrency=concurrency,
                                              csv_path=work / f"pa-paired-{names[id(server)]}-{concurrency}.csv",
                                              settings=settings)

        def accounted(server: LocalTritonServer, concurrency: int) -> Callable[[], dict]:
            """The served point plus the CPU each process spent on it, per image."""
            def measure() -> dict:
                server_before = processes.cpu_seconds_by_model(server.pid)
                client_before = _waited_children_cpu_seconds()
                images_before = compare.model_counters(server, contract.RESNET_MODEL).images
                point = served(server, concurrency)()
                images = compare.model_counters(server, contract.RESNET_MODEL).images - images_before
                spent = {name: seconds - server_before.get(name, 0.0)
                         for name, seconds in processes.cpu_seconds_by_model(server.pid).items()}
                spent["perf_analyzer"] = _waited_children_cpu_seconds() - client_before
                return {**point, "core_ms_per_image": {name: round(seconds * 1000 / images, 1)
                                                       for name, seconds in spent.items()}}
            return measure

        def http(target: str, url: str, build: RequestBuilder, concurrency: int) -> Callable[[], dict]:
            return lambda: asdict(closed_loop(target, url, build, images, concurrency=concurrency,
                                              requests=settings["compare_requests"]))

        steps: list[tuple[str, Callable[[], dict]]] = [
            ("grpc_c1", served(fp32, 1)),
            ("stand_in_c1", served(stand_in, 1)),
            ("in_process", lambda: asdict(measure_in_process(model, images, label, settings["repeats"]))),
            ("grpc_c8", accounted(fp32, 8)),
            ("stand_in_c8", accounted(stand_in, 8)),
            *([("int8_c8", served(int8, 8))] if int8 else []),
        ]
        for concurrency in settings["compare_concurrency"]:
            steps += [(f"http_triton_c{concurrency}",
                       http("triton", fp32.http_url, lambda image: (INFER_PATH, *classify_request(image)),
                            concurrency)),
                      (f"http_naive_c{concurrency}",
                       http("naive", naive, lambda image: ("/classify", {}, image), concurrency))]
        rounds = []
        for index in range(settings["rounds"]):
            measured = {}
            for name, measure in steps if index % 2 == 0 else reversed(steps):
                measured[name] = measure()
                print(f"round {index + 1} {name}: {_summary(measured[name])}", flush=True)
            rounds.append(measured)
    return rounds


def _waited_children_cpu_seconds() -> float:
    """CPU of the finished child processes (each perf_analyzer run) of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(point: dict) -> str:
    if "compute_ceiling_img_s" in point:
        return f"ceiling {point['compute_ceiling_img_s']} img/s, single image {point['pipeline_single_image_ms']} ms"
    return f"{point['throughput']:.1f} img/s p50 {point['p50_ms']:.0f} ms p99 {point['p99_ms']:.0f} ms"


def targets(rounds: list[dict]) -> list[Target]:
    """The issue's targets on a 2-core CPU machine, per round."""
    def per_round(numerator: Callable[[dict], float], denominator: Callable[[dict], float]) -> list[float]:
        return [compare.ratio(numerator(r), denominator(r)) for r in rounds]

    found = []
    for c in (1, 8):
        found += [
            Target(f"native CPU config ≥ the python_ort stand-in's img/s, gRPC c={c}",
                   per_round(lambda r, c=c: r[f"grpc_c{c}"]["throughput"],
                             lambda r, c=c: r[f"stand_in_c{c}"]["throughput"]),
                   lambda value: value >= 1.0),
            Target(f"… with p99 no worse than the stand-in's, gRPC c={c} (native/stand-in p99)",
                   per_round(lambda r, c=c: r[f"grpc_c{c}"]["p99_ms"], lambda r, c=c: r[f"stand_in_c{c}"]["p99_ms"]),
                   lambda value: value <= 1.0),
        ]
    found += [
        Target("served fp32 gRPC c=8 ≥ 0.95× compute ceiling",
               per_round(lambda r: r["grpc_c8"]["throughput"], lambda r: r["in_process"]["compute_ceiling_img_s"]),
               lambda value: value >= 0.95),
        Target("served fp32 gRPC c=8 vs raw ORT",
               per_round(lambda r: r["grpc_c8"]["throughput"], lambda r: r["in_process"]["raw_ort_img_s"]),
               None),
        Target("c=1 p50 ≤ 1.10× in-process single image",
               per_round(lambda r: r["grpc_c1"]["p50_ms"], lambda r: r["in_process"]["pipeline_single_image_ms"]),
               lambda value: value <= 1.10),
    ]
    concurrencies = sorted(int(name.removeprefix("http_triton_c"))
                           for name in rounds[0] if name.startswith("http_triton"))
    for c in concurrencies:
        floor = 1.0 if c > 1 else 0.95
        found += [
            Target(f"served ≥ {floor:.2f}× naive server, HTTP c={c}",
                   per_round(lambda r, c=c: r[f"http_triton_c{c}"]["throughput"],
                             lambda r, c=c: r[f"http_naive_c{c}"]["throughput"]),
                   lambda value, floor=floor: value >= floor),
            Target(f"… with p99 no worse than the naive server's, HTTP c={c} (Triton/naive p99)",
                   per_round(lambda r, c=c: r[f"http_triton_c{c}"]["p99_ms"],
                             lambda r, c=c: r[f"http_naive_c{c}"]["p99_ms"]),
                   lambda value: value <= 1.0),
        ]
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
        lines += ["", "The c=1 target of these results compares perf_analyzer's p50 with the in-process *mean* "
                  "single-image time: they predate measuring its median."]
    lines += ["", *cpu_lines(rounds)]
    lines += ["", "<details><summary>Every point of every round</summary>", "",
              "| round | point | img/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|---|"]
    for index, measured in enumerate(rounds, start=1):
        for name, point in measured.items():
            if name == "in_process":
                lines.append(f"| {index} | in-process: compute ceiling / raw ORT / single image | "
                             f"{point['compute_ceiling_img_s']} / {point['raw_ort_img_s']} | "
                             f"{point['pipeline_single_image_ms']} | | |")
            else:
                failed = point.get("failed", point.get("failures", "not counted"))
                mark = "†" if isinstance(failed, int) and failed else ""
                lines.append(f"| {index} | {name}{mark} | {point['throughput']:.1f} | {point['p50_ms']:.0f} | "
                             f"{point['p99_ms']:.0f} | {failed} |")
    return lines + ["", "</details>"]


def cpu_lines(rounds: list[dict]) -> list[str]:
    """Where the CPU goes per served image at gRPC c=8, native and stand-in, against the in-process cost."""
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    def per_process(point: str) -> dict[str, float]:
        names = {name for r in rounds for name in r[point]["core_ms_per_image"]}
        return {name: median([r[point]["core_ms_per_image"].get(name, 0.0) for r in rounds]) for name in names}

    native, stand_in = per_process("grpc_c8"), per_process("stand_in_c8")
    in_process = {"preprocess": median([r["in_process"]["preprocess_core_ms"] for r in rounds]),
                  "resnet50": median([r["in_process"]["ort_core_ms"] for r in rounds])}
    cores = os.cpu_count() or 1
    throughput = statistics.median(r["grpc_c8"]["throughput"] for r in rounds)
    lines = ["Where the CPU goes at gRPC c=8 (core-ms per image from /proc, median over rounds; in process: "
             "the same decoding and ORT work without a server). On the native backend resnet50's ONNX Runtime "
             "threads run inside tritonserver, so its row holds them; the stand-in runs them in its resnet50 stubs.",
             "", "| process | native CPU config | python_ort stand-in | in process |", "|---|---|---|---|"]
    for name in sorted(set(native) | set(stand_in)):
        lines.append(f"| {name} | {native.get(name, '–')} | {stand_in.get(name, '–')} | {in_process.get(name, '')} |")
    total, stand_in_total = round(sum(native.values()), 1), round(sum(stand_in.values()), 1)
    in_process_total = round(sum(in_process.values()), 1)
    busy = throughput * total / 1000
    lines += [f"| total | {total} | {stand_in_total} | {in_process_total} |", "",
              f"At the median {throughput:.1f} img/s the native configuration's processes keep {busy:.2f} of the "
              f"{cores} cores busy. Served, the work costs {total / in_process_total:.2f}× its in-process CPU "
              f"(the stand-in {stand_in_total / in_process_total:.2f}×), and the cores are {busy / cores:.0%} busy: "
              f"together about {in_process_total / total * busy / cores:.2f}× the compute ceiling, the distance the "
              "ceiling target measures."]
    return lines
