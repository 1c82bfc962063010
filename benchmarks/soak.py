"""Soak: keep the server saturated for a while; count errors and watch its memory.

    python -m benchmarks.soak --minutes 10            # the benchmark suite's soak (own server)

Memory is the resident set (RSS) of tritonserver plus its Python-backend stubs, sampled every few
seconds; "flat" means the end is within 10 % (+20 MB) of the level after the first fifth of the run
(warm-up: allocator pools, ORT arenas). Writes results.json and report.md under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import shopvision
from benchmarks import PUBLISHED, SCRATCH, publish, run_facts
from benchmarks.processes import tree_rss_bytes
from shopvision.samples import product_jpeg

SAMPLE_EVERY_S = 5.0


@dataclass(frozen=True)
class SoakResult:
    seconds: float
    concurrency: int
    images: int
    errors: int
    images_per_s: float
    rss_after_warmup_mb: float
    rss_end_mb: float
    rss_samples_mb: list[float]

    @property
    def memory_flat(self) -> bool:
        return self.rss_end_mb <= self.rss_after_warmup_mb * 1.10 + 20


async def _load(url: str, images: list[bytes], *, concurrency: int, seconds: float) -> tuple[int, int]:
    """Closed loop: ``concurrency`` requests of one image always outstanding."""
    done = errors = 0
    deadline = time.monotonic() + seconds
    async with shopvision.AsyncClient(url, max_in_flight=concurrency, batch_size=1) as client:

        async def worker(offset: int) -> None:
            nonlocal done, errors
            sent = offset
            while time.monotonic() < deadline:
                try:
                    await client.embed([images[sent % len(images)]])
                    done += 1
                except shopvision.ShopvisionError:
                    errors += 1
                sent += concurrency

        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return done, errors


def soak(url: str, server_pid: int, *, seconds: float, concurrency: int = 8) -> SoakResult:
    images = [product_jpeg(5000 + seed, size=(640, 480)) for seed in range(16)]
    samples: list[float] = []
    stop = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < stop:
            samples.append(tree_rss_bytes(server_pid) / 2**20)
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def run() -> tuple[int, int]:
        sampler = asyncio.create_task(sample())
        try:
            return await _load(url, images, concurrency=concurrency, seconds=seconds)
        finally:
            await sampler

    started = time.monotonic()
    done, errors = asyncio.run(run())
    elapsed = time.monotonic() - started
    samples.append(tree_rss_bytes(server_pid) / 2**20)
    warm = samples[max(1, len(samples) // 5)] if len(samples) > 1 else samples[0]
    return SoakResult(round(elapsed, 1), concurrency, done, errors, round(done / elapsed, 1), round(warm, 1),
                      round(samples[-1], 1), [round(s, 1) for s in samples])


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwind: stop the server
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=SCRATCH / "soak",
                        help=f"default: {SCRATCH / 'soak'}; the published report: {PUBLISHED / 'soak'}")
    args = parser.parse_args(argv)
    import tempfile

    from benchmarks.run import synthetic_repository
    from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

    (args.out / "raw").mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = free_ports(3)
    with tempfile.TemporaryDirectory() as scratch, (args.out / "raw" / "tritonserver.log").open("wb") as log:
        repository = synthetic_repository(Path(scratch))
        options = ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics)
        with LocalTritonServer(options, log=log) as server:
                result = soak(server.grpc_url, server.pid, seconds=args.minutes * 60, concurrency=args.concurrency)
    command = " ".join(["python -m benchmarks.soak", *(argv if argv is not None else sys.argv[1:])])
    publish(args.out, {**run_facts(command), **asdict(result), "memory_flat": result.memory_flat}, report)
    return 0 if result.errors == 0 and result.memory_flat else 1


def report(results: dict) -> str:
    verdict = "flat" if results["memory_flat"] else "GROWING"
    return (
        f"# Soak\n\n`{results['command']}`: {results['seconds']:.0f} s at concurrency {results['concurrency']} "
        f"(gRPC, 640x480 JPEGs, synthetic weights): {results['images']} images, {results['errors']} errors, "
        f"{results['images_per_s']} img/s."
        + (f" Commit {results['commit']}, code fingerprint {results['code_fingerprint']}; "
           f"{results['configuration']}." if "commit" in results else "") + "\n\n"
        f"Server RSS (tritonserver + backend stubs): {results['rss_after_warmup_mb']} MB after warm-up, "
        f"{results['rss_end_mb']} MB at the end: **{verdict}**. Samples every {SAMPLE_EVERY_S:.0f} s (MB): "
        f"{results['rss_samples_mb']}\n")


if __name__ == "__main__":
    sys.exit(main())
