"""One command for the benchmark suite: in-process baselines and the served ensemble, side by side.

    python -m benchmarks.run --mode quick     # ~2 minutes, CI smoke
    python -m benchmarks.run --mode full      # the report's numbers

Same model file, same JPEG bytes, same machine, same run. Writes results.json, results.csv,
plots and report.md under --out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import signal
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime as ort

from benchmarks import SCRATCH, code_fingerprint, compare, current_commit, paired, perf
from benchmarks.in_process import InProcess, measure_in_process
from shopvision import contract
from shopvision.samples import product_jpeg

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository"
SECTIONS = ("in_process", "paired", "variants", "resnet50_alone", "served")
"""In the order they run: a run stopped early still has the targets and configurations."""
MODES = {
    # Count windows: a fixed number of requests per measurement, so p99 means the same at
    # every concurrency on a slow machine.
    "quick": {"sizes": [(640, 480)], "concurrency": [1, 8], "protocols": ["grpc"], "requests": 48,
              "stability": 50, "repeats": 16, "compare_concurrency": [8], "compare_requests": 24,
              "rounds": 1, "engines_compared": [], "variants": [], "variant_concurrency": [8], "resnet_alone": []},
    "full": {"sizes": [(640, 480), (1600, 1200)], "concurrency": [1, 2, 4, 8, 16, 32],
             "protocols": ["grpc", "http"], "requests": 160, "stability": 30, "repeats": 64,
             "compare_concurrency": [1, 8], "compare_requests": 160,
             "rounds": 3, "engines_compared": ["openvino"],
             "variants": ["default", "openvino", "single_instance", "two_instances_one_thread", "unbounded_batches",
                          "no_batching", "no_quality_monitor", "int8"],
             "variant_concurrency": [1, 8],
             "resnet_alone": [1, 8]},
}


def measure_served(repository: Path, model: Path, images: dict[str, list[bytes]], data: dict[str, Path], work: Path,
                   settings: dict) -> list[dict]:
    """Every served point, each with the in-process ceilings measured in this section just before the server
    started, so that a ratio never divides by another section's (or run's) measurement."""
    # At least the full mode's repeats: a ceiling measured in a second or two is too noisy to divide by.
    repeats = max(settings["repeats"], MODES["full"]["repeats"])
    ceilings = {label: measure_in_process(model, batch, label, repeats) for label, batch in images.items()}
    rows = []
    with compare.triton(repository, work / "tritonserver.log") as server:
        for label, input_data in data.items():
            ceiling = {"compute_ceiling_img_s": ceilings[label].compute_ceiling_img_s,
                       "raw_ort_img_s": ceilings[label].raw_ort_img_s}
            for protocol in settings["protocols"]:
                for concurrency in settings["concurrency"]:
                    row = compare.perf_point(server, model=contract.ENSEMBLE_MODEL, protocol=protocol,
                                             input_data=input_data, concurrency=concurrency,
                                             csv_path=work / f"pa-{label}-{protocol}-{concurrency}.csv",
                                             settings=settings)
                    rows.append({"image_size": label, "protocol": protocol, **row, **ceiling})
                    print(f"served {label} {protocol} c={concurrency}: {row['throughput']:.1f} img/s "
                          f"p50 {row['p50_ms']:.0f} ms p99 {row['p99_ms']:.0f} ms batch {row['avg_batch']}", flush=True)
    return rows


def plot(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    rows = results.get("served") or []
    if rows:
        plots.append(_plot_served(plt, rows, out))
    first = rows[0]["image_size"] if rows else None
    bars = [(f"default c={r['concurrency']}", r["throughput"]) for r in rows
            if r["image_size"] == first and r["protocol"] == "grpc" and r["concurrency"] in (1, 8)]
    bars += [(f"{v['variant']} c={v['concurrency']}", v["throughput"]) for v in results.get("variants", [])]
    bars += [(f"{name} (median of rounds)", value)
             for name, value in paired.median_throughputs(results["paired"]).items()
             if name.startswith("http_")]
    figure, axis = plt.subplots(figsize=(11, 4))
    axis.barh([label for label, _ in bars], [value for _, value in bars])
    axis.set_xlabel("images/s")
    axis.set_title("Configurations, int8 and the naive server (640x480 JPEGs, synthetic ResNet50, CPU)")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(out / "configurations.png", dpi=110)
    plt.close(figure)
    return [*plots, "configurations.png"]


def _plot_served(plt, rows: list[dict], out: Path) -> str:  # matplotlib.pyplot
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    series = sorted({(r["image_size"], r["protocol"]) for r in rows})
    for size, protocol in series:
        points = sorted((r for r in rows if (r["image_size"], r["protocol"]) == (size, protocol)),
                        key=lambda r: r["concurrency"])
        xs = [p["concurrency"] for p in points]
        throughput.plot(xs, [p["throughput"] for p in points], marker="o", label=f"{size} {protocol}")
        latency.plot(xs, [p["p50_ms"] for p in points], marker="o", label=f"{size} {protocol} p50")
        latency.plot(xs, [p["p99_ms"] for p in points], marker="x", linestyle="--", label=f"{size} {protocol} p99")
    for axis, title, unit in ((throughput, "Throughput", "images/s"), (latency, "Latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_ylim(bottom=0)
        axis.set_xlabel("concurrency")
        axis.set_ylabel(unit)
        axis.set_title(f"{title} (synthetic ResNet50, CPU)")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "served.png", dpi=110)
    plt.close(figure)
    return "served.png"


def _marks(point: dict) -> str:
    """* perf_analyzer could not stabilise; † requests failed during the point."""
    return ("" if point.get("stable", True) else "*") + ("†" if point.get("failed") else "")


def _failed(point: dict) -> str:
    return str(point["failed"]) if "failed" in point else "not counted"


def _against(point: dict, ceiling: str) -> str:
    """A ratio to the ceiling measured in the point's own section, or a dash where that section had none."""
    return f"{compare.ratio(point['throughput'], point[ceiling])}×" if ceiling in point else "—"


def _served_table(rows: list[dict]) -> list[str]:
    lines = ["| images | protocol | concurrency | img/s | p50 ms | p90 ms | p99 ms | queue ms (preprocess + resnet50) "
             "| server compute ms | avg batch | failed | vs compute ceiling | vs the engine alone |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        queue = f"{r['server_queue_ms']:.1f}" if "requests" in r else "not measured"
        lines.append(f"| {r['image_size']} | {r['protocol']} | {r['concurrency']}{_marks(r)} | {r['throughput']:.1f} | "
                     f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {queue} | "
                     f"{r['server_compute_ms']:.1f} | {r['avg_batch']} | {_failed(r)} | "
                     f"{_against(r, 'compute_ceiling_img_s')} | {_against(r, 'raw_ort_img_s')} |")
    lines += ["", "Ceilings are measured in process in the same section, just before its server starts; a dash "
              "means this section's results predate that and no ratio is printed."]
    above = sorted({f"{r['image_size']} {r['protocol']} c={r['concurrency']}" for r in rows
                    for ceiling in ("compute_ceiling_img_s", "raw_ort_img_s")
                    if ceiling in r and r["throughput"] > r[ceiling]})
    if above:
        lines.append(f"Above a ceiling ({', '.join(above)}): a served point cannot really beat the same work in "
                     "process, so that section's in-process measurement came out low; read those ratios as this "
                     "machine's noise.")
    windows = [r["window_requests"] for r in rows if "window_requests" in r]
    if windows:
        lines.append(f"Each p99 is perf_analyzer's over a window of at least {min(windows)} requests "
                     + ("(at least 1,000)." if min(windows) >= 1000 else
                        "(fewer than 1,000: read the p99 column as indicative)."))
    if len(windows) < len(rows):
        lines.append(f"How many requests each p99 rests on was not recorded for {len(rows) - len(windows)} of "
                     "these points.")
    return lines


def _analysis(results: dict) -> list[str]:
    """Where the served throughput goes, from this run's own comparisons."""
    served = results.get("served") or []
    default = next((r for r in served if r["image_size"] == served[0]["image_size"] and r["protocol"] == "grpc"
                    and r["concurrency"] == 8), None)
    variants = {(v["variant"], v["concurrency"]): v for v in results.get("variants", [])}
    if not variants:
        return []
    lines = ["## Reading the numbers", ""]
    stamps = results.get("sections", {})
    when = {stamps[name]["measured_at"] for name in ("served", "variants") if name in stamps}
    if len(when) == 2:
        lines += [f"The shipped configuration's served points and the variants were measured at different times "
                  f"({' and '.join(sorted(when))}); on this VM the same point moves between runs, so ratios "
                  "across those two sections are indicative only.", ""]
    cores = stamps.get("paired", {}).get("cores")
    lines.append("- The compute ceiling counts only the engine and decoding; perf_analyzer, Triton's threads, the "
                 "Python-backend stubs and their shared-memory copies run on the same "
                 f"{f'{cores} cores' if cores else 'cores'} (the CPU table above measures each).")
    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    naive = [f"{medians[name]}× over {protocol}" for protocol in ("HTTP", "gRPC")
             if (name := paired.naive_target_name(protocol, 8, "throughput")) in medians]
    lines.append("- Against the naive server at c=8 (img/s, Triton/naive, median of the paired rounds): "
                 f"{', '.join(naive)}. Both do the same decoding and engine work; the naive server in one process, "
                 "one image at a time, Triton with its stubs, shared-memory copies and dynamic batches. Triton's case "
                 "on CPU is also what the naive server lacks: queue bounds and load shedding, metrics, model control, "
                 "one repository for CPU and GPU.")
    naive_share = medians.get("the naive server's img/s ÷ the in-process compute ceiling, HTTP c=8")
    served_share = medians.get("served fp32 gRPC c=8 ≥ 0.95× the in-process compute ceiling")
    if naive_share and served_share:
        needed = round(1.10 * naive_share, 2)
        lines.append(
            f"- Where the c=8 targets go: the naive server already serves {naive_share}× the in-process compute "
            "ceiling (the same decoding and engine work, a thread per core, no server at all), so 1.10× its images a "
            f"second would be {needed}× that ceiling" + (
                ", more than the same work costs in process: no serving can reach it on this machine; only cheaper "
                "work per image (int8 above, or a smaller backbone) moves it." if needed > 1 else
                f", and the shipped configuration serves {served_share}× it (perf_analyzer, gRPC). The CPU table says "
                "where the difference goes: the served work costs more CPU than in process (the Python-backend "
                "steps' hand-offs, tritonserver's front end, the client), and the cores are not quite all busy.")
            + " Over HTTP and gRPC from the closed-loop client, whose Python runs on the same two cores, Triton "
            "pays more per request than perf_analyzer's C++ client costs it.")
    single = medians.get("served gRPC c=1 p50 ÷ the in-process single image")
    if single:
        lines.append(f"- Where the c=1 target goes: a lone image served takes {single}× its in-process time; it "
                     "crosses Triton's front end and three Python-backend steps (preprocess, resnet50, "
                     "quality_monitor), each hand-off a shared-memory copy and a wake-up of another process, where "
                     "the naive server calls the same code in one process (the no_quality_monitor variant below "
                     "prices one step).")
    shipped = {c: variants.get(("default", c)) for c in (1, 8)}
    for name in compare.VARIANTS:
        if name == "default" or (name, 8) not in variants or not shipped[8]:
            continue
        lines.append(f"- {name} ({compare.VARIANTS[name].what}): "
                     f"{compare.ratio(variants[(name, 8)]['throughput'], shipped[8]['throughput'])}× the shipped "
                     "configuration's img/s at c=8" + (
                         f", {compare.ratio(variants[(name, 1)]['p50_ms'], shipped[1]['p50_ms'])}× its c=1 p50"
                         if (name, 1) in variants and shipped[1] else "") + ".")
    if shipped[8] and default:
        lines.append("- Drift: the shipped configuration at c=8 with the same JPEGs gave "
                     f"{default['throughput']:.1f} img/s "
                     f"in the served section and {shipped[8]['throughput']:.1f} img/s in the configurations section, "
                     f"{compare.ratio(shipped[8]['throughput'], default['throughput'])}× with nothing changed but the "
                     "time of day on this shared VM; this is why the targets are measured in paired rounds.")
    lines.append("- Variant ratios compare points of the same section (measured minutes apart, not paired), so "
                 "a variant within about 10 % of the shipped configuration is within this VM's noise.")
    return lines + [""]


def plot_names(results: dict) -> list[str]:
    """The plots :func:`plot` draws for these results, in the report's order."""
    return (["served.png"] if results.get("served") else []) + ["configurations.png"]


def report(results: dict) -> str:
    """The report of these results: a function of them alone, so a test can render it again and compare."""
    in_process = [InProcess(**b) for b in results["in_process"]]
    command = results["command"]
    plots = plot_names(results)
    lines = [
        "# shopvision benchmark report", "",
        f"`{command}`; rendered from results.json.", "",
        *_section_lines(results), "",
        "**Synthetic ResNet50 weights** (exact architecture, seeded): speed is "
        "representative, accuracy is not. tritonserver 2.51 from the nvidia-pytriton wheel, "
        f"`--model-config-name={contract.CPU_CONFIG_NAME}`: resnet50 in the Python backend on ONNX Runtime "
        f"{ort.__version__} from PyPI, what the container serves on a CPU node. The naive server is FastAPI + the "
        "same engine, preprocessing and model file (`benchmarks/naive_server.py`), driven by the same closed-loop "
        "client as Triton's HTTP and gRPC points.", "",
        "## Targets (ratios within this run)", "", *paired.report_lines(results["paired"]), "",
        *_analysis(results),
        "## In-process baselines (same model file, same JPEGs)", "",
        "| images | preprocess core-ms/img | engine core-ms/img | compute ceiling img/s | engine alone img/s "
        "| in-process single-image ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {b.image_size} | {b.preprocess_core_ms} | {b.ort_core_ms} | {b.compute_ceiling_img_s} | "
              f"{b.raw_ort_img_s} | {b.pipeline_single_image_ms} |" for b in in_process]
    lines += ["", "## Served ensemble (perf_analyzer, real JPEG input data)", "",
              *(_served_table(results["served"]) if results.get("served") else
                ["Not measured in this run: it was stopped before this section (sections run in the order "
                 "in_process, paired, variants, resnet50_alone, served)."])]
    if results.get("variants"):
        lines += ["", "## Configurations (perf_analyzer, gRPC, first image size)", "",
                  "| variant | what | concurrency | img/s | p50 ms | p99 ms | avg batch | failed |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {v['variant']} | {compare.VARIANTS[v['variant']].what} | {v['concurrency']}{_marks(v)} | "
                  f"{v['throughput']:.1f} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | {v['avg_batch']} | {_failed(v)} |"
                  for v in results["variants"]]
        if any(v["variant"] == "int8" for v in results["variants"]):
            calibration = results.get("int8_calibration",
                                      "the benchmark's own images (these results predate separate calibration photos)")
            lines += ["", f"int8: calibrated on {calibration}. Its accuracy is unknown: with synthetic weights there "
                      "is nothing to measure it against, and no published figure is for this quantization of these "
                      "weights."]
    if results.get("resnet50_alone"):
        lines += ["", "## resnet50 alone (perf_analyzer, random FP32 tensors, gRPC)", "",
                  "| concurrency | img/s | p50 ms | p99 ms | avg batch | failed |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['concurrency']}{_marks(r)} | {r['throughput']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                  f"{r['avg_batch']} | {_failed(r)} |" for r in results["resnet50_alone"]]
    lines += ["", "\\* perf_analyzer could not meet its stability criterion on this noisy VM; measured once more "
              "without it. † requests failed during the point (the failed column counts them, from Triton's "
              "statistics).", "", *[f"![{name}]({name})" for name in plots], "",
              "Rerun: `" + command + "`. Raw perf_analyzer CSVs and server logs are kept under `raw/` (not committed)."]
    return "\n".join(lines) + "\n"


def publish_report(out: Path, results: dict) -> None:
    """Draw the plots, write report.md, and print it."""
    plot(results, out)
    text = report(results)
    (out / "report.md").write_text(text)
    print(text)


def fingerprint(settings: dict) -> str:
    """What a section's numbers depend on: the code (commit and uncommitted changes, reports aside) and the
    mode's settings. ``--resume`` keeps only sections measured with the same fingerprint."""
    material = json.dumps({"code": code_fingerprint(), "settings": settings}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def section_stamp(settings: dict) -> dict:
    """Recorded when a section is measured, not when the report is rendered."""
    return {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "commit": current_commit(),
            "fingerprint": fingerprint(settings)}


def _section_lines(results: dict) -> list[str]:
    stamps = results.get("sections", {})
    if not stamps:
        legacy = results.get("resumed")  # what results from before per-section stamps recorded of a resume
        return ["When and where each section was measured was not recorded in these results (they predate "
                "per-section stamps)."
                + (f" The run was resumed at {legacy['at']}: {', '.join(legacy['kept'])} come from its first "
                   "attempt, the other sections from the resumed one." if legacy else "")]
    lines = ["| section | measured | machine | cores | commit | Python | onnxruntime |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {stamp['measured_at']} | {stamp['platform']} | {stamp['cores']} | {stamp['commit']} | "
              f"{stamp['python']} | {stamp['onnxruntime']} |" for name, stamp in stamps.items()]
    return lines


def kept_sections(results: dict, settings: dict) -> list[str]:
    """The sections an interrupted run measured that ``--resume`` may keep; refuses any measured with other code
    or settings, since one report would then mix them."""
    current = fingerprint(settings)
    measured = [name for name in SECTIONS if name in results]
    stamps = results.get("sections", {})
    foreign = [f"{name} ({stamps[name]['commit']}, {stamps[name]['measured_at']})" if name in stamps else
               f"{name} (no fingerprint)" for name in measured if stamps.get(name, {}).get("fingerprint") != current]
    if foreign:
        raise SystemExit("--resume refused: these sections were measured with other code or settings: "
                         f"{', '.join(foreign)}. Rerun without --resume (or with another --out).")
    return measured


def synthetic_repository(scratch: Path) -> Path:
    """A repository assembled from the template with synthetic weights (seed 0) built into version 1."""
    from shopvision.modelbuild.build import build_model

    repository = scratch / "model_repository"
    build_model("synthetic", repository, template=TEMPLATE)
    return repository


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (kill, timeout) must unwind the `with` blocks, or the servers started here outlive the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default: {SCRATCH}/<mode>; the published reports: benchmarks/results/<mode>")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md and the plots from results.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the sections results.json already has (an interrupted run) and measure the rest")
    args = parser.parse_args(argv)
    settings = MODES[args.mode]
    out = args.out or SCRATCH / args.mode
    if args.render:
        publish_report(out, json.loads((out / "results.json").read_text()))
        return 0
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    command = f"python -m benchmarks.run --mode {args.mode}" + (f" --out {args.out}" if args.out else "")
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if args.resume and saved.exists() else {"command": command}
    if args.resume:
        kept_sections(results, settings)
    results.setdefault("sections", {})

    def section(name: str, measure) -> None:
        """Measure a section unless a resumed run has it, and save after each one."""
        if name not in results:
            stamp = section_stamp(settings)
            results[name] = measure()
            results["sections"][name] = stamp
            saved.write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        repository = synthetic_repository(work)
        model = repository / contract.RESNET_MODEL / "1" / contract.MODEL_FILE
        images = {f"{w}x{h}": [product_jpeg(seed, size=(w, h)) for seed in range(8)] for w, h in settings["sizes"]}
        first_size, first_images = next(iter(images.items()))
        int8_model = None
        if "int8" in settings["variants"]:
            calibration = compare.calibration_images(settings["sizes"][0])
            int8_model = compare.quantize_int8(model, work / "model-int8.onnx", calibration)
            results["int8_calibration"] = (f"{len(calibration)} generated photos that are not the benchmark's "
                                           "images (seeds from 10,000)")

        def in_process() -> list[dict]:
            repeats = settings["repeats"]
            baselines = [measure_in_process(model, batch, label, repeats) for label, batch in images.items()]
            if int8_model is not None:
                baselines.append(measure_in_process(int8_model, first_images, f"{first_size} int8", repeats))
            for baseline in baselines:
                print(f"in-process {baseline}", flush=True)
            return [asdict(b) for b in baselines]

        data = {label: perf.write_input_data(raw / f"input-{label}.json", batch) for label, batch in images.items()}
        # Most telling first: a run stopped early (a slow VM) still has the targets and configurations,
        # and --resume measures the rest.
        section("in_process", in_process)
        section("paired", lambda: paired.measure_rounds(
            repository, int8_model and compare.variant_repository(repository, work / "paired", "int8", int8_model),
            first_images, data[first_size], raw, settings, scratch=work))
        section("variants", lambda: compare.measure_variants(repository, data[first_size], raw, settings, int8_model,
                                                                    scratch=work))
        section("resnet50_alone", lambda: compare.measure_resnet_alone(repository, raw, settings))
        section("served", lambda: measure_served(repository, model, images, data, raw, settings))

    if results.get("served"):
        with (out / "results.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(results["served"][0]))
            writer.writeheader()
            writer.writerows(results["served"])
    publish_report(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
