"""What a categories head costs in the served ensemble, measured against ResNet50 in the same run.

    python -m benchmarks.categories --out benchmarks/results/categories

One server (the CPU configuration, explicit model control) over a synthetic-weights repository; a head
trained on generated labelled photos (samples.SAMPLE_CATEGORIES) and promoted. Then rounds of two
perf_analyzer points on the ensemble, with the head and without it (promoted to 0), alternating which
comes first. Per image, Triton's own compute time of the categories and resnet50 models during the
head's points; end to end, each round's throughput and p50 with the head over those without.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import (
    PUBLISHED,
    SCRATCH,
    SERVED_CONFIGURATION,
    compare,
    configuration_of,
    perf,
    publish,
    rerender,
)
from shopvision import Client, contract
from shopvision.categories.pipeline import train_and_install
from shopvision.repository.heads import NO_HEAD, promote_head
from shopvision.samples import SAMPLE_CATEGORIES, category_image, encode, write_labelled_photos
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository"
ADMIN_KEY = "categories-benchmark"
SETTINGS = {"stability": 15, "requests": 120, "concurrency": 2, "rounds": 4, "photos_per_category": 24}


def measure(out: Path) -> dict:
    from benchmarks.run import synthetic_repository

    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        repository = synthetic_repository(Path(scratch))
        write_labelled_photos(Path(scratch) / "labelled", per_category=SETTINGS["photos_per_category"])
        queries = [encode(category_image(category, 6000 + index)) for index, category in
                   enumerate(SAMPLE_CATEGORIES * 2)]
        input_data = perf.write_input_data(raw / "input.json", queries)
        http, grpc, metrics = free_ports(3)
        options = ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                model_control="explicit", admin_key=ADMIN_KEY)
        with (raw / "tritonserver.log").open("wb") as log, LocalTritonServer(options, log=log) as server:
            with Client(server.grpc_url) as client:
                installed = train_and_install(Path(scratch) / "labelled", client, repository=repository,
                                              template=TEMPLATE)
            rounds = []
            for number in range(SETTINGS["rounds"]):
                order = (installed.version, NO_HEAD) if number % 2 == 0 else (NO_HEAD, installed.version)
                points = {}
                for head in order:
                    promoted = promote_head(repository, head, url=server.grpc_url, admin_key=ADMIN_KEY)
                    if not promoted.promoted and promoted.previous != head:
                        raise SystemExit(f"promoting head {head} failed: {promoted.reason}")
                    points["head" if head else "no_head"] = point(server, input_data, raw, f"{number}-{head}")
                rounds.append(points)
                print(f"round {number}: {json.dumps(rounds[-1])}", flush=True)
    return {"head": {"version": installed.version, "categories": installed.head.categories,
                     "held_out_accuracy": installed.report.evaluation.held_out.accuracy},
            "rounds": rounds}


def point(server: LocalTritonServer, input_data: Path, raw: Path, name: str) -> dict:
    models = (contract.RESNET_MODEL, contract.CATEGORIES_MODEL)
    before = {model: compare.model_counters(server, model) for model in models}
    served = compare.perf_point(server, model=contract.ENSEMBLE_MODEL, protocol="grpc", input_data=input_data,
                                concurrency=SETTINGS["concurrency"], csv_path=raw / f"pa-{name}.csv",
                                settings=SETTINGS)
    during = {model: compare.model_counters(server, model) - before[model] for model in models}
    return {"throughput": served["throughput"], "p50_ms": served["p50_ms"], "p99_ms": served["p99_ms"],
            "failed": served["failed"],
            **{f"{model}_compute_us_per_image": round(counters.compute_ns / max(counters.images, 1) / 1e3, 1)
               for model, counters in during.items()},
            **{f"{model}_images": counters.images for model, counters in during.items()}}


def summary(results: dict) -> dict:
    """The figures the report and the documentation quote: medians over the rounds."""
    rounds = results["rounds"]
    head_us = [r["head"][f"{contract.CATEGORIES_MODEL}_compute_us_per_image"] for r in rounds]
    resnet_us = [r["head"][f"{contract.RESNET_MODEL}_compute_us_per_image"] for r in rounds]
    return {
        "head_us": statistics.median(head_us),
        "resnet_ms": statistics.median(resnet_us) / 1000,
        "head_share_percent": statistics.median(h / r for h, r in zip(head_us, resnet_us, strict=True)) * 100,
        "throughput": [r["head"]["throughput"] / r["no_head"]["throughput"] for r in rounds],
        "p50": [r["head"]["p50_ms"] / r["no_head"]["p50_ms"] for r in rounds],
        "failed": sum(r[state]["failed"] for r in rounds for state in ("head", "no_head")),
    }


def report(results: dict) -> str:
    rounds, figures, head = results["rounds"], summary(results), results["head"]
    lines = [
        "# What a categories head costs in the served ensemble",
        "",
        f"Measured {results['measured_at']} on {results['machine']} ({results['cores']} cores), commit "
        f"{results['commit']}: `{results['command']}`. SYNTHETIC ResNet50 weights; the head (version "
        f"{head['version']}, {len(head['categories'])} generated categories, held-out accuracy "
        f"{head['held_out_accuracy']:.3f} on these synthetic embeddings) is a 2048 x {len(head['categories'])} "
        f"Gemm and a Softmax. {configuration_of(results)}, explicit model control; "
        f"perf_analyzer over gRPC at concurrency {SETTINGS['concurrency']}, real JPEGs, "
        f"{SETTINGS['requests']} requests a window.",
        "",
        "| round | with head: img/s | p50 ms | without: img/s | p50 ms | head compute µs/img "
        "| resnet50 compute µs/img |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {index + 1} | {r['head']['throughput']:.1f} | {r['head']['p50_ms']:.0f} | "
          f"{r['no_head']['throughput']:.1f} | {r['no_head']['p50_ms']:.0f} | "
          f"{r['head'][f'{contract.CATEGORIES_MODEL}_compute_us_per_image']} | "
          f"{r['head'][f'{contract.RESNET_MODEL}_compute_us_per_image']} |" for index, r in enumerate(rounds)),
        "",
        f"- The head's compute per image: median **{figures['head_us']:.0f} µs**, "
        f"{figures['head_share_percent']:.2f} % of ResNet50's ({figures['resnet_ms']:.0f} ms) in the same "
        "requests (Triton's compute_infer statistics of each model).",
        f"- End to end, with the head over without (rounds alternate which goes first): throughput "
        f"{span(figures['throughput'])}, {verdict(figures['throughput'])}; p50 {span(figures['p50'])}, "
        f"{verdict(figures['p50'])}. The head's compute cannot explain a lasting difference; its step can "
        "(one more model for each request to pass through: a queue and a hand-off between threads).",
        f"- Failed requests: {figures['failed']}.",
        "",
    ]
    return "\n".join(lines)


def verdict(ratios: list[float]) -> str:
    if min(ratios) > 1:
        return "higher in every round"
    if max(ratios) < 1:
        return "lower in every round"
    return "the rounds on both sides of 1.0: within this VM's noise"


def span(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SCRATCH / "categories",
                        help=f"default: {SCRATCH / 'categories'}; the published report: {PUBLISHED / 'categories'}")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md from results.json")
    args = parser.parse_args(argv)
    if args.render:
        return rerender(args.out, report)
    results = {"configuration": SERVED_CONFIGURATION,
               "command": " ".join(["python -m benchmarks.categories", *(argv if argv is not None else sys.argv[1:])]),
               "machine": platform.node(), "cores": len(os.sched_getaffinity(0)),
               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **measure(args.out)}
    publish(args.out, results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
