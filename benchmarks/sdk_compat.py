"""Which tritonclient releases the SDK works with: the range pyproject.toml allows is the range this passed on.

    python -m benchmarks.sdk_compat --out benchmarks/results/sdk-compat [--versions 2.51.0 2.60.0 ...]

For each release, a fresh virtual environment gets ``tritonclient[grpc,http]==<release>``, numpy and Pillow (the
SDK's dependencies, nothing else) from the package index, and runs :data:`CHECK` with the SDK from this checkout
against one real tritonserver 2.51 (synthetic weights), over gRPC and HTTP, sync and async: classes, embeddings,
server info, a refused image raised as ``InvalidImageError``, an unreachable server as ``ServerUnavailableError``.
A release passes when every check passes and its embeddings and classes equal the pinned release's (2.51.0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import PUBLISHED, SCRATCH, current_commit, publish, run_facts

BASELINE = "2.51.0"
DEFAULT_VERSIONS = ("2.48.0", "2.51.0", "2.55.0", "2.60.0", "2.65.0", "2.73.0")
CLIENT = Path(__file__).resolve().parent.parent / "src"

CHECK = """
import asyncio, hashlib, json, sys, warnings
from importlib.metadata import version
import numpy as np
import shopvision
from shopvision.samples import product_jpeg

warnings.simplefilter("ignore", shopvision.SyntheticWeightsWarning)
images = [product_jpeg(seed) for seed in range(4)]
answers = {"tritonclient": version("tritonclient")}
for url in sys.argv[1:3]:
    with shopvision.Client(url) as client:
        client.wait_until_ready(timeout_s=60)
        classes = [[p.index for p in row] for row in client.classify(images, top_k=3)]
        embeddings = client.embed(images)
        try:
            client.embed([b"not an image"])
            refused = "served"
        except shopvision.InvalidImageError:
            refused = "InvalidImageError"
        info = client.info()

    async def embed_async():
        async with shopvision.AsyncClient(url) as client:
            return await client.embed(images)

    same_async = bool(np.array_equal(asyncio.run(embed_async()), embeddings))
    answers[url.split(":")[0]] = {
        "classes": classes, "embeddings_sha256": hashlib.sha256(np.round(embeddings, 5).tobytes()).hexdigest(),
        "async_equal": same_async, "refused_image": refused, "server_version": info.server_version}
try:
    with shopvision.Client("grpc://127.0.0.1:9", retry=shopvision.NO_RETRY, timeout_s=5) as client:
        client.embed(images[:1])
    answers["unreachable"] = "answered"
except shopvision.ServerUnavailableError:
    answers["unreachable"] = "ServerUnavailableError"
print(json.dumps(answers))
"""


def check_release(version: str, grpc_url: str, http_url: str, scratch: Path) -> dict:
    venv = scratch / f"tritonclient-{version}"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"tritonclient[grpc,http]=={version}",
                                "numpy>=1.24", "Pillow>=10.0"], capture_output=True, text=True, check=False)
    if installed.returncode != 0:
        return {"version": version, "installed": False, "error": installed.stderr[-600:]}
    ran = subprocess.run([str(venv / "bin" / "python"), "-c", CHECK, grpc_url, http_url], capture_output=True,
                         text=True, check=False, env={"PYTHONPATH": str(CLIENT), "PATH": "/usr/bin:/bin"})
    result: dict = {"version": version, "installed": True, "seconds": round(time.monotonic() - started, 1)}
    if ran.returncode != 0:
        return {**result, "error": ran.stderr[-1200:]}
    return {**result, "answers": json.loads(ran.stdout.strip().splitlines()[-1])}


def verdicts(results: dict) -> dict[str, str]:
    """Each release's verdict against the baseline's answers."""
    baseline = next(entry["answers"] for entry in results["releases"] if entry["version"] == BASELINE)
    found = {}
    for entry in results["releases"]:
        if "answers" not in entry:
            found[entry["version"]] = "fails: " + ("not installable" if not entry["installed"] else "the check raised")
            continue
        answers = entry["answers"]
        problems = [] if answers["tritonclient"] == entry["version"] else [f"ran {answers['tritonclient']}"]
        problems += [f"{protocol}: {what}" for protocol in ("grpc", "http") for what, ok in (
            ("classes differ", answers[protocol]["classes"] == baseline[protocol]["classes"]),
            ("embeddings differ", answers[protocol]["embeddings_sha256"] == baseline[protocol]["embeddings_sha256"]),
            ("async differs", answers[protocol]["async_equal"]),
            ("a bad image not refused", answers[protocol]["refused_image"] == "InvalidImageError")) if not ok]
        if answers["unreachable"] != "ServerUnavailableError":
            problems.append("unreachable server not ServerUnavailableError")
        found[entry["version"]] = "passes" if not problems else "fails: " + "; ".join(problems)
    return found


def report(results: dict) -> str:
    found = verdicts(results)
    lines = ["# The SDK against tritonclient releases", "",
             f"`{results['command']}`, {results['measured_at']}, commit {results['commit']}; one tritonserver "
             f"{results['server_version']} (synthetic weights), the SDK from the checkout, each release in a fresh "
             "virtual environment with only the SDK's dependencies. The baseline is the pinned "
             f"{BASELINE}: a release passes when every check passes and its classes and embeddings equal the "
             "baseline's, over gRPC and HTTP, sync and async.", "",
             "| tritonclient | verdict | seconds (install + check) |", "|---|---|---|"]
    for entry in results["releases"]:
        lines.append(f"| {entry['version']} | {found[entry['version']]} | {entry.get('seconds', '')} |")
    passing = [version for version, verdict in found.items() if verdict == "passes"]
    lines += ["", f"Passing: {', '.join(passing)}. pyproject.toml allows `tritonclient[grpc,http]` from the "
              "lowest passing release to below the next minor release after the highest (tests/test_packaging.py "
              "checks it against this report)."]
    for entry in results["releases"]:
        if "error" in entry:
            lines += ["", f"{entry['version']}:", "```", entry["error"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SCRATCH / "sdk-compat",
                        help=f"default: {SCRATCH / 'sdk-compat'}; the published report: {PUBLISHED / 'sdk-compat'}")
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS))
    args = parser.parse_args(argv)
    if BASELINE not in args.versions:
        parser.error(f"the versions must include the baseline {BASELINE}")
    from benchmarks.run import synthetic_repository
    from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

    (args.out / "raw").mkdir(parents=True, exist_ok=True)
    results = {**run_facts(" ".join(["python -m benchmarks.sdk_compat", *(argv if argv is not None
                                                                          else sys.argv[1:])])),
               "commit": current_commit(), "releases": []}
    with tempfile.TemporaryDirectory() as scratch:
        repository = synthetic_repository(Path(scratch))
        http, grpc, metrics = free_ports(3)
        server = LocalTritonServer(ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics),
                                   log=(args.out / "raw" / "tritonserver.log").open("ab"))
        server.start()
        try:
            for version in args.versions:
                entry = check_release(version, server.grpc_url, server.http_url, Path(scratch))
                print(version, "ok" if "answers" in entry else "FAILED", flush=True)
                results["releases"].append(entry)
        finally:
            server.stop()
    baseline = next(entry for entry in results["releases"] if entry["version"] == BASELINE)
    results["server_version"] = baseline.get("answers", {}).get("grpc", {}).get("server_version", "?")
    results["verdicts"] = verdicts(results)
    publish(args.out, results, report)
    return 0 if results["verdicts"][BASELINE] == "passes" else 1


if __name__ == "__main__":
    sys.exit(main())
