"""How many ``preprocess`` instances a GPU needs: one core's decoding rate against ResNet50's on the GPU.

    python -m benchmarks.gpu_feed --out benchmarks/results/gpu-feed     # needs torch + torchvision with CUDA

Not the served stack: ResNet50 here is torchvision's (the architecture the repository serves,
random weights) under PyTorch, not ONNX Runtime's CUDA provider inside Triton. It measures the
GPU's appetite for images, which is what sizing ``preprocess`` (one image at a time per core)
needs; the served GPU configuration itself has not run on a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import publish
from shopvision.backend.preprocessing import Preprocessor
from shopvision.samples import product_jpeg

SIZES = [(640, 480), (1600, 1200)]
BATCHES = [1, 8, 16, 32]


def preprocess_img_s(size: tuple[int, int], repeats: int) -> float:
    images = [product_jpeg(seed, size=size) for seed in range(8)]
    preprocessor = Preprocessor()
    preprocessor(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        preprocessor(images)
    return len(images) * repeats / (time.perf_counter() - start)


def gpu_img_s(batch: int, *, half: bool, seconds: float) -> float:
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None).eval().cuda()
    inputs = torch.randn(batch, 3, 224, 224, device="cuda")
    if half:
        model, inputs = model.half(), inputs.half()
    with torch.inference_mode():
        for _ in range(5):
            model(inputs)
        torch.cuda.synchronize()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(inputs)
            runs += 1
        torch.cuda.synchronize()
        return batch * runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="per GPU point")
    args = parser.parse_args()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    results = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "preprocess_img_s_per_core": {f"{w}x{h}": round(preprocess_img_s((w, h), 16), 1) for w, h in SIZES},
        "gpu_img_s": {f"{precision} batch {batch}": round(gpu_img_s(batch, half=precision == "fp16",
                                                                    seconds=args.seconds), 1)
                      for precision in ("tf32", "fp16") for batch in BATCHES},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    publish(args.out, results, report)


def report(results: dict) -> str:
    peak = max(results["gpu_img_s"].values())
    lines = [f"# Feeding a GPU: preprocess cores per {results['gpu']}", "",
             f"Measured {results['measured_at']} by `python -m benchmarks.gpu_feed`: torch {results['torch']}, "
             f"{results['cpu_cores']} CPU cores. ResNet50 is torchvision's under PyTorch with random weights "
             "(cuDNN autotuned), not ONNX Runtime inside Triton: it bounds how many images a second the GPU "
             "takes, which is what sizing `preprocess` needs.", "",
             "| ResNet50 on the GPU | img/s |", "|---|---|",
             *[f"| {name} | {value} |" for name, value in results["gpu_img_s"].items()], "",
             "| photo size | preprocess img/s on one core | cores to match the GPU's best rate |", "|---|---|---|",
             *[f"| {size} | {rate} | {math.ceil(peak / rate)} |"
               for size, rate in results["preprocess_img_s_per_core"].items()]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
