"""Limits: what requests at the size limit cost the server, measured to size the chart's memory.

    python -m benchmarks.limits --out benchmarks/results/limits

Each section starts its own tritonserver (the `cpu` configuration, with the flags shopvision ships)
and measures the resident memory of tritonserver and its backend stubs (VmRSS summed over the
process tree, the soak's accounting; shared memory counts once per process that maps it):

- burst: two rounds of four concurrent requests at the limit (two over HTTP, two over gRPC; each 32
  JPEGs padded to just under the per-image limit): peak while they run, and the level after each round.
- grpc_pool: the same burst with Triton's default gRPC allocation pool (8) instead of shopvision's 0.
- expensive_images: the images that cost preprocess most within the limits (header at the pixel limit, a few
  MB on the wire: RGBA, greyscale+alpha and palette-transparent PNG, 16-bit PNG, a JPEG), each decoded in a
  fresh process (CPU seconds, peak memory growth), and the dearest sent 32 to a request through the server.
- shm_cap: one oversized request sent straight to Triton (as a client inside the cluster could, past
  the gateway), with /dev/shm capped at the chart's CPU size and without a cap. Needs a private mount
  namespace (root, or unprivileged user namespaces); the report says when it could not run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import PUBLISHED, RETIRED_CONFIGURATION, SCRATCH, SERVED_CONFIGURATION, publish
from benchmarks.processes import cpu_seconds_by_model, process_tree, python_model, tree_rss_bytes
from shopvision.contract import (
    CROP_SIZE,
    EMBEDDING,
    ENSEMBLE_MODEL,
    IMAGE_INPUT,
    MAX_BATCH_SIZE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MIB,
    PREPROCESS_MODEL,
    max_request_bytes,
)
from shopvision.samples import encode, product_image, product_jpeg
from shopvision.server.limits import preprocess_batch_bytes, shm_size_bytes
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

SAMPLE_EVERY_S = 0.1
TRITON_DEFAULT_GRPC_POOL = "--grpc-infer-allocation-pool-size=8"


def batch_at_limit(seed: int = 0) -> np.ndarray:
    """A full batch just under the request limit: real JPEGs, each padded to just under the image limit
    (decoders stop at the end-of-image marker, so the padding costs bytes, not decoding)."""
    images = []
    for index in range(MAX_BATCH_SIZE):
        photo = product_jpeg(seed + index)
        images.append([photo + bytes(MAX_IMAGE_BYTES - len(photo) - 16)])
    return np.array(images, dtype=object)


def expensive_images() -> dict[str, bytes]:
    """Images whose header declares the pixel limit (6000x4000 at 24 MP) in few bytes: blocky pictures compress."""
    from PIL import Image

    width = 6000
    size = (width, MAX_IMAGE_PIXELS // width)
    picture = product_image(3, size=(600, 400)).resize(size, Image.Resampling.NEAREST)
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(size, Image.Resampling.NEAREST))
    sixteen_bit = Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257)
    palette = picture.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    return {
        "RGBA PNG": encode(rgba, "PNG", compress_level=1),
        "greyscale + alpha PNG": encode(rgba.convert("LA"), "PNG", compress_level=1),
        "palette PNG with transparency": encode(palette, "PNG", transparency=0, compress_level=1),
        "16-bit PNG": encode(sixteen_bit, "PNG", compress_level=1),
        "JPEG": encode(picture, "JPEG", quality=95),
    }


MEASURE_ONE_IMAGE = """
import json, sys, time
from shopvision.backend.preprocessing import Preprocessor

def peak_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
preprocessor = Preprocessor()
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # restart the peak from here (ru_maxrss would carry the parent's across fork and exec)
before, started = peak_kb(), time.process_time()
crop = preprocessor.crop(data)
print(json.dumps({"cpu_s": time.process_time() - started, "size": list(crop.shape),
                  "peak_growth_mb": (peak_kb() - before) / 1024}))
"""


@dataclass(frozen=True)
class ImageCost:
    name: str
    encoded_mb: float
    cpu_s: float
    """CPU seconds of preprocess's crop of this one image, in a fresh process."""
    peak_growth_mb: float
    """How far that process's peak RSS rose during the crop: the decoded image and every working copy."""


def image_costs(images: dict[str, bytes], scratch: Path) -> list[ImageCost]:
    costs = []
    for index, (name, data) in enumerate(images.items()):
        path = scratch / f"expensive-{index}"
        path.write_bytes(data)
        measured = json.loads(subprocess.run([sys.executable, "-c", MEASURE_ONE_IMAGE, str(path)], check=True,
                                             capture_output=True, text=True).stdout)
        assert measured["size"] == [CROP_SIZE, CROP_SIZE, 3], measured
        costs.append(ImageCost(name, round(len(data) / MIB, 2), round(measured["cpu_s"], 2),
                               round(measured["peak_growth_mb"], 1)))
    return costs


@dataclass(frozen=True)
class ExpensiveRequestResult:
    image: str
    request_mb: float
    seconds: float
    preprocess_cpu_s: float
    peak_growth_mb: float
    """Server tree RSS peak while the request ran, above the level before it."""
    served: int


def expensive_request(server: LocalTritonServer, name: str, data: bytes) -> ExpensiveRequestResult:
    """One request of a full batch of the dearest image, over HTTP: what it costs the one preprocess instance."""
    pid = server.pid or 0
    infer("http", server.http_url.removeprefix("http://"), np.array([[product_jpeg(1)]], dtype=object))  # warm
    time.sleep(1)
    before_rss, before_cpu = tree_rss_bytes(pid) / MIB, cpu_seconds_by_model(pid).get(PREPROCESS_MODEL, 0.0)
    batch = np.array([[data]] * MAX_BATCH_SIZE, dtype=object)
    started = time.monotonic()
    results, peak = run_concurrently([lambda: infer("http", server.http_url.removeprefix("http://"), batch)], pid)
    seconds = time.monotonic() - started
    cpu = cpu_seconds_by_model(pid).get(PREPROCESS_MODEL, 0.0) - before_cpu
    served = results[0] if isinstance(results[0], int) else 0
    return ExpensiveRequestResult(name, round(MAX_BATCH_SIZE * len(data) / MIB, 1), round(seconds, 1),
                                  round(cpu, 1), round(peak - before_rss, 1), served)


def one_image(byte_count: int) -> np.ndarray:
    return np.array([[bytes(byte_count)]], dtype=object)


def infer(protocol: str, address: str, images: np.ndarray) -> int:
    """Send one request; the number of embeddings that came back (raises tritonclient's errors)."""
    if protocol == "http":
        import tritonclient.http as http

        with http.InferenceServerClient(address, connection_timeout=60, network_timeout=600) as client:
            tensor = http.InferInput(IMAGE_INPUT, list(images.shape), "BYTES")
            tensor.set_data_from_numpy(images, binary_data=True)
            result = client.infer(ENSEMBLE_MODEL, [tensor])
    else:
        import tritonclient.grpc as grpc

        with grpc.InferenceServerClient(address) as client:
            tensor = grpc.InferInput(IMAGE_INPUT, list(images.shape), "BYTES")
            tensor.set_data_from_numpy(images)
            result = client.infer(ENSEMBLE_MODEL, [tensor], client_timeout=600)
    return len(result.as_numpy(EMBEDDING))


def run_concurrently(calls: list[Callable[[], object]], server_pid: int) -> tuple[list[object], float]:
    """Results (or exceptions) of calls run at once, and the peak tree RSS in MB while they ran."""
    results: list[object] = [None] * len(calls)

    def call(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:  # recorded, reported per request
            results[index] = error

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    peak = 0.0
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, tree_rss_bytes(server_pid) / MIB)
        time.sleep(SAMPLE_EVERY_S)
    return results, peak


@dataclass(frozen=True)
class BurstResult:
    extra_args: list[str]
    idle_mb: float
    peak_mb: float
    after_round_mb: list[float]
    served: int
    failed: list[str]
    preprocess_pool_mb: float = 0.0
    """preprocess's Python-backend shared-memory pool after the burst (it never shrinks)."""

    @property
    def per_request_mb(self) -> float:
        """What one more in-flight request at the limit adds to the peak (the burst holds four)."""
        return round((self.peak_mb - self.idle_mb) / 4, 1)


def python_backend_pools_mb(server_pid: int) -> dict[str, float]:
    """Each Python-backend model's shared-memory pool, by model, from the regions its stubs map."""
    pools: dict[str, float] = {}
    for member in process_tree(server_pid):
        try:
            model = python_model(member)
            regions = {line.split()[-1] for line in Path(f"/proc/{member}/maps").read_text().splitlines()
                       if "/dev/shm/" in line and "_shm_region_" in line}
        except OSError:
            continue  # the process ended while we looked
        if model is not None:
            pools[model] = pools.get(model, 0.0) + sum(Path(region).stat().st_size for region in regions) / MIB
    return pools


def burst(server: LocalTritonServer, *, rounds: int = 2) -> tuple[float, list[float], int, list[str]]:
    http, grpc = server.http_url.removeprefix("http://"), server.grpc_url.removeprefix("grpc://")
    batch = batch_at_limit()
    peak, after, served, failed = 0.0, [], 0, []
    for _ in range(rounds):
        calls = [lambda protocol=protocol, address=address: infer(protocol, address, batch)
                 for protocol, address in (("http", http), ("grpc", grpc)) * 2]
        results, round_peak = run_concurrently(calls, server.pid or 0)
        peak = max(peak, round_peak)
        served += sum(1 for result in results if result == MAX_BATCH_SIZE)
        failed += [repr(result)[:300] for result in results if isinstance(result, Exception)]
        time.sleep(1)
        after.append(round(tree_rss_bytes(server.pid or 0) / MIB, 1))
    return round(peak, 1), after, served, failed


@dataclass(frozen=True)
class ShmCapResult:
    shm_cap_bytes: int | None
    request_bytes: int
    seconds: float
    error: str
    rss_growth_mb: float
    good_request_after: bool


class PrivateShmServer(LocalTritonServer):
    """tritonserver in its own mount namespace with a /dev/shm of a given size, as a container gets one."""

    def __init__(self, options: ServerOptions, *, shm_bytes: int, **kwargs: object) -> None:
        super().__init__(options, **kwargs)  # type: ignore[arg-type]
        self.shm_bytes = shm_bytes

    def command(self) -> list[str]:
        mount = f'mount -t tmpfs -o size={self.shm_bytes} tmpfs /dev/shm && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *super().command()]


def private_namespaces_work() -> bool:
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"], capture_output=True, check=False)
    return probe.returncode == 0


def oversized_request(server: LocalTritonServer, request_bytes: int, shm_cap: int | None) -> ShmCapResult:
    address = server.http_url.removeprefix("http://")
    before = tree_rss_bytes(server.pid or 0)
    started = time.monotonic()
    try:
        infer("http", address, one_image(request_bytes))
        error = "(served)"
    except Exception as failure:
        error = str(failure)[:240]
    seconds = time.monotonic() - started
    time.sleep(1)
    growth = (tree_rss_bytes(server.pid or 0) - before) / MIB
    good = infer("http", address, np.array([[product_jpeg(1)]], dtype=object)) == 1
    return ShmCapResult(shm_cap, request_bytes, round(seconds, 1), error, round(growth, 1), good)


def started_server(repository: Path, log_path: Path, *, extra_args: tuple[str, ...] = (),
                   shm_bytes: int | None = None) -> LocalTritonServer:
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, extra_args=extra_args)
    log = log_path.open("ab")
    server = (LocalTritonServer(options, log=log) if shm_bytes is None
              else PrivateShmServer(options, shm_bytes=shm_bytes, log=log))
    server.start()
    return server


def measure_burst(repository: Path, log_path: Path, extra_args: tuple[str, ...]) -> BurstResult:
    server = started_server(repository, log_path, extra_args=extra_args)
    try:
        idle = round(tree_rss_bytes(server.pid or 0) / MIB, 1)
        peak, after, served, failed = burst(server)
        pool = python_backend_pools_mb(server.pid or 0).get(PREPROCESS_MODEL, 0.0)
    finally:
        server.stop()
    return BurstResult(list(extra_args), idle, peak, after, served, failed, round(pool, 1))


def report(results: dict) -> str:
    shipped, default_pool = (BurstResult(**results[name]) for name in ("burst", "grpc_pool"))
    limit_mb = results["request_limit_bytes"] / MIB
    lines = [
        "# Requests at the size limit",
        "",
        f"`{results['command']}` on {results['machine']} ({results['cores']} cores), "
        f"measured {results['measured_at']}, commit {results['commit']}. Synthetic weights; "
        f"{results.get('configuration', RETIRED_CONFIGURATION)}.",
        "",
        f"The request limit is {limit_mb:.0f} MiB: {MAX_BATCH_SIZE} images of at most {MAX_IMAGE_BYTES // MIB} MiB "
        "(`shopvision.contract.max_request_bytes`). Memory is the RSS of tritonserver and its backend stubs, "
        "summed over the process tree (shared memory counts once per process that maps it).",
        "",
        "## Four concurrent requests at the limit (two HTTP, two gRPC), two rounds",
        "",
        "| server flags | idle MB | peak MB | after round 1 | after round 2 | per in-flight request MB | served "
        "| failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in (("shipped", shipped), ("Triton's default gRPC pool (8)", default_pool)):
        lines.append(f"| {name} | {result.idle_mb} | {result.peak_mb} | {result.after_round_mb[0]} | "
                     f"{result.after_round_mb[-1]} | {result.per_request_mb} | {result.served} "
                     f"| {len(result.failed)} |")
    saved = default_pool.after_round_mb[-1] - shipped.after_round_mb[-1]
    lines += ["", f"Without gRPC's allocation pool the server held {saved:.0f} MB "
              f"{'less' if saved >= 0 else 'more'} after the burst than with Triton's default pool."]
    for failure in shipped.failed + default_pool.failed:
        lines.append(f"- failed: {failure}")
    costs = [ImageCost(**entry) for entry in results["expensive_images"]]
    request = ExpensiveRequestResult(**results["expensive_request"])
    lines += ["", f"## The dearest images within the limits: {MAX_IMAGE_PIXELS // 1_000_000} MP "
              "(`shopvision.contract.MAX_IMAGE_PIXELS`) in a few MB", "",
              "Each decoded and cropped by preprocess's code in a fresh process; peak memory is how far that "
              "process's peak RSS rose.", "",
              "| image | encoded MB | CPU s | peak memory MB |", "|---|---|---|---|"]
    lines += [f"| {cost.name} | {cost.encoded_mb} | {cost.cpu_s} | {cost.peak_growth_mb} |" for cost in costs]
    lines += ["", f"A request of {MAX_BATCH_SIZE} {request.image}s ({request.request_mb} MB) through the server over "
              f"HTTP: {request.served} embeddings in {request.seconds} s, {request.preprocess_cpu_s} CPU s of "
              f"preprocess, server memory {request.peak_growth_mb} MB above its level before. preprocess decodes one "
              "image at a time per instance, so this peak is per preprocess instance, not per request: it is "
              "added once to the chart's sizing below. The gateway's per-client request rate bounds how much "
              "decoding time one client can ask for."]
    cap = results["shm_cap"]
    lines += ["", "## One oversized request straight to Triton, with and without a /dev/shm cap", ""]
    if cap is None:
        lines.append("Not measured: this machine gave no private mount namespace (needs root or user namespaces).")
    else:
        lines += ["| /dev/shm | request MB | seconds | answer | RSS growth MB | next good request served |",
                  "|---|---|---|---|---|---|"]
        for entry in cap:
            result = ShmCapResult(**entry)
            size = "host's (uncapped)" if result.shm_cap_bytes is None else f"{result.shm_cap_bytes // MIB} MiB"
            lines.append(f"| {size} | {result.request_bytes // MIB} | {result.seconds} | {result.error} | "
                         f"{result.rss_growth_mb} | {'yes' if result.good_request_after else 'NO'} |")
    sizing = results["chart_sizing"]
    batch_mb = preprocess_batch_bytes() / MIB
    lines += ["", "## What /dev/shm is sized from", "",
              f"After the burst, preprocess's shared-memory pool held {shipped.preprocess_pool_mb:.0f} MB: "
              f"{shipped.preprocess_pool_mb / batch_mb:.2f}× a full batch at the limit ({batch_mb:.0f} MB of images "
              "in and pixels out). `shopvision.server.limits.shm_size_bytes` allows twice a full batch per "
              "preprocess instance."]
    lines += ["", "## What the chart is sized from", "",
              f"- Peak with four requests at the limit in flight: {shipped.peak_mb} MB; each one in flight adds "
              f"about {shipped.per_request_mb} MB.",
              f"- The dearest image's decoding, per preprocess instance: {sizing['decode_mb']} MB.",
              f"- Memory limit: that peak plus a quarter, or plus the decoding if that is more, rounded up to 512 MiB: "
              f"at least {sizing['limit_mib']} MiB.",
              f"- Memory request: the level after the burst ({shipped.after_round_mb[-1]} MB), rounded up to 512 MiB: "
              f"at least {sizing['request_mib']} MiB.",
              ""]
    return "\n".join(lines)


def round_up_mib(megabytes: float, step: int = 512) -> int:
    return int(-(-megabytes // step) * step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SCRATCH / "limits",
                        help=f"default: {SCRATCH / 'limits'}; the published report: {PUBLISHED / 'limits'}")
    args = parser.parse_args(argv)
    from benchmarks.run import synthetic_repository

    (args.out / "raw").mkdir(parents=True, exist_ok=True)
    log_path = args.out / "raw" / "tritonserver.log"
    results: dict = {
        "configuration": SERVED_CONFIGURATION,
        "command": " ".join(["python -m benchmarks.limits", *(argv if argv is not None else sys.argv[1:])]),
        "machine": platform.node(), "cores": len(__import__("os").sched_getaffinity(0)),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "request_limit_bytes": max_request_bytes(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        repository = synthetic_repository(Path(scratch))
        shipped = measure_burst(repository, log_path, ())
        results["burst"] = asdict(shipped)
        results["grpc_pool"] = asdict(measure_burst(repository, log_path, (TRITON_DEFAULT_GRPC_POOL,)))
        images = expensive_images()
        costs = image_costs(images, Path(scratch))
        results["expensive_images"] = [asdict(cost) for cost in costs]
        dearest = max(costs, key=lambda cost: cost.peak_growth_mb).name
        server = started_server(repository, log_path)
        try:
            results["expensive_request"] = asdict(expensive_request(server, dearest, images[dearest]))
        finally:
            server.stop()
        if private_namespaces_work():
            cap = shm_size_bytes(preprocess_instances=1)
            entries = []
            for shm_cap in (None, cap):
                server = started_server(repository, log_path, shm_bytes=shm_cap)
                try:
                    entries.append(asdict(oversized_request(server, cap + 256 * MIB, shm_cap)))
                finally:
                    server.stop()
            results["shm_cap"] = entries
        else:
            results["shm_cap"] = None
    decode_mb = max(results["expensive_request"]["peak_growth_mb"],
                    max(cost["peak_growth_mb"] for cost in results["expensive_images"]))
    results["chart_sizing"] = {"limit_mib": round_up_mib(shipped.peak_mb + max(shipped.peak_mb / 4, decode_mb)),
                               "request_mib": round_up_mib(shipped.after_round_mb[-1]), "decode_mb": decode_mb}
    publish(args.out, results, report)
    served_all = shipped.served == 8 and not shipped.failed and results["expensive_request"]["served"] == MAX_BATCH_SIZE
    return 0 if served_all else 1


if __name__ == "__main__":
    sys.exit(main())
