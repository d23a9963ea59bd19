"""Micro-batching: merge concurrent requests into one model call on a dedicated worker thread.

The event loop only enqueues and awaits. The worker takes the first waiting image, then keeps
taking more until the batch holds `max_batch_size` images or `max_batch_delay_s` has passed on
the monotonic clock since that first image (images already queued at the deadline still join).
It also closes the batch early when the queue is empty and no request is still being prepared
(decoded): nobody else is on the way, so waiting out the delay would only add latency.
A failing batch fails only its own requests; the worker goes on with the next batch.

Model calls at once (`concurrency`, default 1): every model call, the worker's batches and inline runs
alike, holds one of `concurrency` lanes. On the CPU two single-image calls on two cores do more per
second than one call split over both by onnxruntime's intra-op threads, and a session may be run from
several threads at once; on a GPU one lane keeps the device to one batch at a time. A call that starts
while another runs uses `predict_shared` (on the CPU: a one-thread session, see `service.model`).

Inline runs (`inline_when_idle`, on for the CPU provider): when nothing is queued and a lane is free,
`run_inline` runs one image at once on the calling (decode) thread, as a batch of one. What this saves is
the hand-off to the worker thread and back, which costs a request as much as a small model's inference
when the machine has few cores and there is nothing to batch with anyway. Under load images still queue
and batch.

Deadlines: `infer(..., deadline=t)` answers `DeadlineExceededError` at `t` (monotonic) if the worker
has not taken the image by then, and the worker skips it when it comes to it; an image already in a
running batch is always finished. `expected_wait_s` estimates how long a newly queued image would wait
(images ahead of it times a moving average of the seconds per image), so a caller can refuse work that
would only expire in the queue before spending a decode on it. A batch runs the model's `explain`
function (probabilities and heatmaps) instead of `predict` when any of its images asked for heatmaps.
Either function may also return the model's out-of-distribution scores [N] as a last element; each
image's row then comes back as `BatchResult.ood_score`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from medcore.imaging import stack_batch

logger = logging.getLogger(__name__)

# probabilities [N, L], or (probabilities, ood_score [N]) for a model with an out-of-distribution output.
Predict = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray]]
# (probabilities, heatmaps [N, L, h, w]), or (probabilities, heatmaps, ood_score).
Explain = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]]
BatchObserver = Callable[[int, float], None]
WAIT_SMOOTHING = 0.2  # weight of the latest value in the moving averages of seconds per image (and per decode)


def moving_average(previous: float | None, latest: float) -> float:
    """The exponential moving average the timing estimates use: `latest` alone when there is no `previous`."""
    return latest if not previous else previous + WAIT_SMOOTHING * (latest - previous)


class QueueFullError(RuntimeError):
    """More images are waiting than the queue limit allows; the client should retry later."""


class NotReadyError(RuntimeError):
    """The worker has not finished warm-up, has stopped, or the service is shutting down."""


class BatchError(RuntimeError):
    """The model call for a batch failed or returned the wrong number of outputs."""


class DeadlineExceededError(RuntimeError):
    """The image was still queued at its deadline and was dropped; the client should retry later."""


@dataclass(frozen=True)
class BatchResult:
    """One image's output row and how it was served."""

    probabilities: np.ndarray
    batch_size: int
    queue_wait_s: float
    inference_s: float
    heatmaps: np.ndarray | None = None  # [L, h, w] when the image asked for them
    ood_score: float | None = None  # the model's out-of-distribution score, when it has that output


_QUEUED, _TAKEN, _DROPPED = "queued", "taken", "dropped"


@dataclass
class _Job:
    inputs: np.ndarray
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop
    enqueued_at: float
    deadline: float | None = None
    explain: bool = False
    state: str = _QUEUED
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> str:
        """Worker side: claim the job for a batch -> "taken"; "dropped" if its request gave up on it;
        "expired" if its deadline has passed (the request is then still waiting for an answer)."""
        with self.lock:
            if self.state != _QUEUED:
                return self.state
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.state = _DROPPED
                return "expired"
            self.state = _TAKEN
            return _TAKEN

    def drop(self) -> bool:
        """Event-loop side: give up on the job unless a batch already holds it."""
        with self.lock:
            if self.state == _QUEUED:
                self.state = _DROPPED
        return self.state == _DROPPED


class MicroBatcher:
    """Owns the request queue and the inference worker thread."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        queue_limit: int,
        warm_up: Callable[[], None] | None = None,
        on_batch: BatchObserver | None = None,
        explain: Explain | None = None,
        fail_batch: int | None = None,
        inline_when_idle: bool = False,
        concurrency: int = 1,
        predict_shared: Predict | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_limit < 1 or max_batch_delay_s < 0 or concurrency < 1:
            raise ValueError(
                f"need max_batch_size >= 1, queue_limit >= 1, max_batch_delay_s >= 0, concurrency >= 1; got "
                f"{max_batch_size}, {queue_limit}, {max_batch_delay_s}, {concurrency}"
            )
        self._predict = predict
        self._predict_shared = predict_shared or predict  # for a call made while another one runs
        self._explain = explain
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_batch_delay_s
        self._queue_limit = queue_limit
        self._warm_up = warm_up
        self._on_batch = on_batch
        self._fail_batch = fail_batch  # test-only fault injection (SERVE_FAULT_INJECT_BATCH): this batch raises
        self._inline_when_idle = inline_when_idle
        self._concurrency = concurrency
        self._lanes = threading.BoundedSemaphore(concurrency)  # model calls at once: batches and inline runs
        self._stats_lock = threading.Lock()  # the counters below, written by whichever thread runs the model
        self._batches = 0
        self._running = 0  # images in the model calls now running
        self._holding = 0  # 1 while the worker holds a queued job and waits for a free lane
        self._seconds_per_image: float | None = None  # moving average over recent batches
        # Unbounded underneath: only the event loop thread enqueues, so checking the depth
        # before putting is race-free, and the stop sentinel (None) can always be put.
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._preparing = 0  # changed on the event loop thread only; the worker just reads it
        self._ready = threading.Event()
        self._closed = False
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)

    @property
    def depth(self) -> int:
        """Images waiting for the worker (not counting the batch being run)."""
        return self._queue.qsize() + self._holding

    def expected_wait_s(self) -> float:
        """Seconds an image queued now would likely wait for the model: the images ahead of it (queued and
        running) times the recent seconds per image, over the lanes; 0 before the first batch has been timed."""
        per_image = self._seconds_per_image
        return 0.0 if per_image is None else (self.depth + self._running) * per_image / self._concurrency

    @property
    def seconds_per_image(self) -> float:
        """Recent model seconds per image (a moving average over batches); 0 before the first one."""
        return self._seconds_per_image or 0.0

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._thread.is_alive() and not self._closed

    @property
    def alive(self) -> bool:
        """False once the worker has died (warm-up failed, or it was stopped)."""
        not_started = self._thread.ident is None
        return self._failure is None and (not_started or self._thread.is_alive())

    @property
    def status(self) -> str:
        """A human sentence saying why the batcher is or is not ready."""
        if self._failure is not None:
            return self._failure
        if self._closed:
            return "shutting down"
        return "ready" if self.ready else "warming up"

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting work, let the worker finish what is queued, and join it."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Wrap a request's decoding and its `submit`, so the worker waits for it rather than closing early."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1

    @property
    def can_explain(self) -> bool:
        return self._explain is not None

    def submit(self, inputs: np.ndarray) -> asyncio.Future[BatchResult]:
        """Queue one CHW input; the future gets its row of the batch it is served in.

        Call it on the event loop thread: that single caller is what makes the limit check exact.
        """
        return self._enqueue(inputs, None, explain=False).future

    async def infer(self, inputs: np.ndarray, *, deadline: float | None = None, explain: bool = False) -> BatchResult:
        """Queue one CHW input and await its result; `DeadlineExceededError` if still queued at `deadline`."""
        job = self._enqueue(inputs, deadline, explain=explain)
        if deadline is None:
            return await job.future
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            if not job.drop():
                return await job.future  # a batch already holds it: finish it
            raise DeadlineExceededError(
                f"the image was still queued at its {self._describe_deadline(job)} deadline; retry shortly"
            ) from None

    def run_inline(self, inputs: np.ndarray, *, explain: bool = False) -> BatchResult | None:
        """Run one CHW input now on the calling thread if a lane is free and nothing is queued; None when
        inline runs are off or every lane is busy (then queue it with `infer`). Blocking: call it in a thread."""
        if not self._inline_when_idle or not self.ready or self.depth:
            return None
        if explain and self._explain is None:
            raise ValueError("this batcher has no explain function")
        if not self._lanes.acquire(blocking=False):
            return None
        try:
            outcome = self._run_model([inputs], explain=explain)
        finally:
            self._lanes.release()
        if isinstance(outcome, Exception):
            raise outcome
        outputs, heatmaps, scores, _, inference_s = outcome
        maps = heatmaps[0] if explain and heatmaps is not None else None
        return BatchResult(outputs[0], 1, 0.0, inference_s, maps, _row(scores, 0))  # never queued

    def _enqueue(self, inputs: np.ndarray, deadline: float | None, *, explain: bool) -> _Job:
        if not self.ready:
            raise NotReadyError(f"the model is not ready: {self.status}")
        if explain and self._explain is None:
            raise ValueError("this batcher has no explain function")
        if self.depth >= self._queue_limit:
            raise QueueFullError(f"{self._queue_limit} images are already waiting; retry shortly")
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop.create_future(), loop, time.monotonic(), deadline, explain)
        self._queue.put(job)
        return job

    @staticmethod
    def _describe_deadline(job: _Job) -> str:
        assert job.deadline is not None
        return f"{(job.deadline - job.enqueued_at) * 1e3:.0f} ms"

    def _run(self) -> None:
        if self._warm_up is not None:
            try:
                self._warm_up()
            except Exception as exc:
                logger.exception("warm-up failed; the service will not become ready")
                self._failure = f"warm-up failed: {exc}"
                return
        self._ready.set()
        stopping = False
        while not stopping:
            first = self._queue.get()  # wait for work without holding the model (inline runs may use it)
            if first is None:
                return
            # Jobs stay queued (their deadline can still drop them; they count in `depth`) until a lane is
            # free for their batch.
            self._holding = 1
            self._lanes.acquire()
            self._holding = 0
            try:
                batch, stopping = self._collect(first)
                if batch:
                    self._process(batch)
            finally:
                self._lanes.release()

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """Holding a lane: from `first` (or the next live job), fill the batch until it is full or
        the delay passes. Jobs dropped by their request or past their deadline are skipped (and answered) here.
        """
        while not self._take(first):
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return [], False
            if job is None:
                return [], True
            first = job
        batch = [first]
        deadline = time.monotonic() + self._max_delay_s
        while len(batch) < self._max_batch_size:
            remaining = deadline - time.monotonic()
            wait = remaining > 0 and (self._preparing > 0 or not self._queue.empty())
            try:
                job = self._queue.get(timeout=remaining) if wait else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            if self._take(job):
                batch.append(job)
        return batch, False

    @staticmethod
    def _take(job: _Job) -> bool:
        outcome = job.take()
        if outcome == "expired":
            deadline = MicroBatcher._describe_deadline(job)
            _settle(job, DeadlineExceededError(f"the image was still queued at its {deadline} deadline; retry shortly"))
        return outcome == _TAKEN

    def _process(self, batch: list[_Job]) -> None:
        """Run a batch (holding a lane) and answer each of its jobs."""
        outcome = self._run_model([job.inputs for job in batch], explain=any(job.explain for job in batch))
        if isinstance(outcome, Exception):
            for job in batch:
                _settle(job, outcome)
            return
        outputs, heatmaps, scores, started, inference_s = outcome
        for i, (job, row) in enumerate(zip(batch, outputs, strict=True)):
            maps = heatmaps[i] if heatmaps is not None and job.explain else None
            wait = started - job.enqueued_at
            _settle(job, BatchResult(row, len(batch), wait, inference_s, maps, _row(scores, i)))

    def _run_model(
        self, inputs: list[np.ndarray], *, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float, float] | BatchError:
        """One model call on a batch (the caller holds a lane): (outputs, heatmaps or None, ood scores or None,
        start time, seconds), or the `BatchError` every image of the batch is answered with. Feeds the timing
        average and `on_batch`."""
        started = time.monotonic()
        heatmaps: np.ndarray | None = None
        scores: np.ndarray | None = None
        with self._stats_lock:
            self._batches += 1
            predict = self._predict_shared if self._running else self._predict
            self._running += len(inputs)
            number = self._batches
        try:
            if number == self._fail_batch:
                raise RuntimeError(f"injected fault in batch {number} (SERVE_FAULT_INJECT_BATCH, test only)")
            batch = stack_batch(inputs)
            if self._explain is not None and explain:
                outputs, heatmaps, *extra = self._explain(batch)
                scores = extra[0] if extra else None
            else:
                answer = predict(batch)
                outputs, scores = answer if isinstance(answer, tuple) else (answer, None)
            if any(part is not None and len(part) != len(inputs) for part in (outputs, heatmaps, scores)):
                raise BatchError(f"the model returned {len(outputs)} outputs for {len(inputs)} inputs")
        except Exception as exc:
            logger.exception("a batch of %d images failed", len(inputs))
            return exc if isinstance(exc, BatchError) else BatchError(f"inference failed: {exc}")
        finally:
            with self._stats_lock:
                self._running -= len(inputs)
        inference_s = time.monotonic() - started
        per_image = inference_s / len(inputs)
        with self._stats_lock:
            self._seconds_per_image = moving_average(self._seconds_per_image, per_image)
        if self._on_batch is not None:
            self._on_batch(len(inputs), inference_s)
        return outputs, heatmaps, scores, started, inference_s


def _row(scores: np.ndarray | None, i: int) -> float | None:
    return None if scores is None else float(scores[i])


def _settle(job: _Job, outcome: BatchResult | Exception) -> None:
    """Hand the outcome to the job's event loop; a cancelled request or closed loop is skipped."""

    def deliver() -> None:
        if job.future.done():
            return
        if isinstance(outcome, Exception):
            job.future.set_exception(outcome)
            if isinstance(outcome, DeadlineExceededError):
                job.future.exception()  # its request may have timed out at the same moment: no "never retrieved"
        else:
            job.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(deliver)
