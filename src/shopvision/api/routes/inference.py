"""``POST /v1/classify``: a photo's ImageNet classes, and the shop's categories while a head serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shopvision.api.actions import analyze
from shopvision.api.deps import MAX_TOP_K, Reads, ServicesDep, UploadDep
from shopvision.api.mappers import provenance, scores
from shopvision.api.schemas import Classification

router = APIRouter(tags=["inference"])


@router.post("/v1/classify", response_model=Classification, dependencies=[Reads],
             summary="Top-k ImageNet classes of a photo")
async def classify(shared: ServicesDep, upload: UploadDep,
                   k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 5) -> Classification:
    result = await analyze(shared, upload.data, top_k=k)
    return Classification(predictions=scores(result.predictions), categories=scores(result.categories),
                          provenance=provenance(await shared.client.provenance()))
