"""The baseline a team builds without Triton: FastAPI + onnxruntime, one image per request.

    python -m benchmarks.naive_server MODEL.onnx --port 9000 [--engine openvino]
    curl --data-binary @shoe.jpg http://127.0.0.1:9000/classify

Same model file, the same preprocessing code and the same engines (:mod:`shopvision.backend.engines`)
as the served ensemble, so the comparison is about serving, not preprocessing. One uvicorn worker;
each request is decoded and run through the engine (every core; ONNX Runtime's spinning off) in
FastAPI's thread pool. No batching, no queue bound, no metrics.
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from shopvision import contract
from shopvision.backend.engines import open_engine
from shopvision.backend.preprocessing import ImageRejected, Preprocessor

TOP_K = 5


def create_app(model: str, engine: str = contract.ENGINES[0]) -> FastAPI:
    runner = open_engine(engine, model, input_name=contract.PIXELS, output_names=[contract.PROBABILITIES], threads=0)
    preprocessor = Preprocessor()
    app = FastAPI(title="naive ResNet50 baseline")

    def top_classes(data: bytes) -> list[dict]:
        (probabilities,) = runner.run(preprocessor([data]))
        best = np.argsort(-probabilities[0])[:TOP_K]
        return [{"index": int(index), "score": float(probabilities[0][index])} for index in best]

    @app.post("/classify")
    async def classify(request: Request) -> dict:
        data = await request.body()
        try:
            return {"classes": await run_in_threadpool(top_classes, data)}
        except ImageRejected as rejection:
            raise HTTPException(status_code=400, detail=str(rejection)) from rejection

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--engine", choices=contract.ENGINES, default=contract.ENGINES[0])
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.engine), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
