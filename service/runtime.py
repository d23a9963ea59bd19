"""What the lifespan builds and the routes use: the loaded model, its batcher and the decode threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.batching import MicroBatcher
from service.model import LoadedModel


@dataclass(frozen=True)
class Runtime:
    model: LoadedModel
    batcher: MicroBatcher
    # Its own few threads (SERVE_DECODE_THREADS, default one per core): enough to keep the cores busy,
    # and a bound on how many full-size images are in memory at once (FastAPI's threadpool runs 40).
    decoder: ThreadPoolExecutor
