"""POST /predict: one uploaded image in, per-label probabilities and decisions out."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from medcore.decision import decide
from medcore.imaging import load_model_input
from medcore.imaging.decode import READABLE_FORMATS
from service.api.deps import MetricsDep, ReadyRuntimeDep, SettingsDep
from service.errors import error_docs
from service.schemas import LabelPrediction, ModelSummary, PredictResponse, Timings

router = APIRouter(tags=["inference"])

ImageUpload = Annotated[
    UploadFile,
    File(description=f"one image ({', '.join(READABLE_FORMATS)}); the format is read from the content, not the name"),
]


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_docs(400, 413, 415, 422, 500, 503),
    summary="Classify one image",
)
async def predict(
    file: ImageUpload, runtime: ReadyRuntimeDep, settings: SettingsDep, metrics: MetricsDep
) -> PredictResponse:
    """Decode and preprocess the image exactly as in training, run it in the next batch, apply the
    record's thresholds. The upload's file name is never used or logged."""
    started = time.perf_counter()
    record = runtime.model.record
    with runtime.batcher.preparing():
        data = await file.read()
        # Decoding a large JPEG takes milliseconds of CPU: keep it off the event loop.
        decode = partial(load_model_input, data, record.preprocessing, max_pixels=settings.max_image_pixels)
        inputs = await asyncio.get_running_loop().run_in_executor(runtime.decoder, decode)
        preprocess_s = time.perf_counter() - started
        pending = runtime.batcher.submit(inputs)
    metrics.preprocess.observe(preprocess_s)
    result = await pending
    metrics.queue_wait.observe(result.queue_wait_s)
    (decisions,) = decide(result.probabilities[None, :], record)
    return PredictResponse(
        model=ModelSummary(name=record.name, version=record.version, task=record.task),
        predictions=[
            LabelPrediction(label=d.label, probability=d.probability, threshold=d.threshold, positive=d.positive)
            for d in decisions
        ],
        batch_size=result.batch_size,
        timings_ms=Timings(
            preprocess=preprocess_s * 1e3,
            queue=result.queue_wait_s * 1e3,
            inference=result.inference_s * 1e3,
            total=(time.perf_counter() - started) * 1e3,
        ),
    )
