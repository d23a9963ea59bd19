"""The micro-batcher on its own: a real worker thread and event loop, with a plain numpy model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from service.batching import (
    BatchError,
    BatchResult,
    DeadlineExceededError,
    MicroBatcher,
    NotReadyError,
    QueueFullError,
)

T = TypeVar("T")


def row_sums(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose output identifies its input: [N, C, H, W] -> [N, 1] sums."""
    return batch.sum(axis=(1, 2, 3))[:, None]


def image(value: float) -> np.ndarray:
    return np.full((1, 2, 2), value, dtype=np.float32)


def run_with(batcher: MicroBatcher, work: Callable[[MicroBatcher], Coroutine[Any, Any, T]]) -> T:
    """Start the worker, run `work` on a fresh event loop once warm-up is done, stop the worker."""

    async def when_ready() -> T:
        while not batcher.ready:
            await asyncio.sleep(0.001)
        return await work(batcher)

    batcher.start()
    try:
        return asyncio.run(when_ready())
    finally:
        batcher.close()


def test_each_result_belongs_to_its_own_input_and_batches_close_on_size() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(
        row_sums, max_batch_size=4, max_batch_delay_s=10.0, queue_limit=64, on_batch=lambda n, _: sizes.append(n)
    )

    async def work(b: MicroBatcher) -> list[BatchResult]:
        with b.preparing():  # announce the whole burst, so the worker never closes a batch for lack of input
            pending = [b.submit(image(float(v))) for v in range(8)]
        return list(await asyncio.gather(*pending))

    results = run_with(batcher, work)
    # A 10 s delay never expires here: only the size limit can have closed these batches.
    assert sizes == [4, 4]
    for value, result in enumerate(results):
        assert result.probabilities.tolist() == [4.0 * value]
        assert result.batch_size == 4


def test_a_batch_closes_at_the_deadline_when_requests_keep_coming() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(
        row_sums, max_batch_size=64, max_batch_delay_s=0.02, queue_limit=64, on_batch=lambda n, _: sizes.append(n)
    )

    async def work(b: MicroBatcher) -> list[BatchResult]:
        with b.preparing():  # a request is always on the way: only the deadline can close the batch
            return [await b.submit(image(3.0))]

    (result,) = run_with(batcher, work)
    assert sizes == [1]
    assert result.probabilities.tolist() == [12.0]


def test_a_lone_request_does_not_wait_out_the_delay() -> None:
    # With an hour's delay, an answer at all shows that the batch closed because nobody else was coming.
    batcher = MicroBatcher(row_sums, max_batch_size=64, max_batch_delay_s=3600, queue_limit=64)

    async def work(b: MicroBatcher) -> BatchResult:
        return await asyncio.wait_for(b.submit(image(3.0)), timeout=60)

    assert run_with(batcher, work).batch_size == 1


def test_the_worker_waits_for_a_request_still_being_prepared() -> None:
    batcher = MicroBatcher(row_sums, max_batch_size=64, max_batch_delay_s=3600, queue_limit=64)

    async def work(b: MicroBatcher) -> list[BatchResult]:
        with b.preparing():
            first = b.submit(image(1.0))
            await asyncio.sleep(0.05)  # the worker now holds `first` and waits for this request
            second = b.submit(image(2.0))
        return [await asyncio.wait_for(first, timeout=60), await second]

    results = run_with(batcher, work)
    assert [r.batch_size for r in results] == [2, 2]
    assert [r.probabilities.tolist() for r in results] == [[4.0], [8.0]]


def test_a_failing_batch_fails_only_its_requests_and_the_worker_lives_on() -> None:
    calls = 0

    def flaky(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return row_sums(batch)

    batcher = MicroBatcher(flaky, max_batch_size=8, max_batch_delay_s=0.0, queue_limit=8)

    async def work(b: MicroBatcher) -> tuple[BaseException, BatchResult]:
        with pytest.raises(BatchError, match="inference failed: boom") as failed:
            await b.submit(image(1.0))
        return failed.value, await b.submit(image(2.0))

    error, result = run_with(batcher, work)
    assert isinstance(error, BatchError)
    assert result.probabilities.tolist() == [8.0]


def test_output_count_is_checked_against_input_count() -> None:
    batcher = MicroBatcher(lambda batch: row_sums(batch)[:-1], max_batch_size=8, max_batch_delay_s=0.05, queue_limit=8)

    async def work(b: MicroBatcher) -> list[BaseException | BatchResult]:
        with b.preparing():  # both in one batch of two, answered with one row
            pending = [b.submit(image(1.0)), b.submit(image(2.0))]
        return list(await asyncio.gather(*pending, return_exceptions=True))

    outcomes = run_with(batcher, work)
    for outcome in outcomes:
        assert isinstance(outcome, BatchError)
        assert "returned 1 outputs for 2 inputs" in str(outcome)


def test_queue_limit_refuses_new_work_while_the_worker_is_busy() -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocked(batch: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        return row_sums(batch)

    batcher = MicroBatcher(blocked, max_batch_size=1, max_batch_delay_s=0.0, queue_limit=1)

    async def work(b: MicroBatcher) -> list[BatchResult]:
        first = asyncio.ensure_future(b.submit(image(1.0)))
        while not entered.is_set():  # the worker holds the first image
            await asyncio.sleep(0.001)
        second = asyncio.ensure_future(b.submit(image(2.0)))  # fills the queue
        await asyncio.sleep(0)
        assert b.depth == 1
        with pytest.raises(QueueFullError):
            await b.submit(image(3.0))
        release.set()
        return [await first, await second]

    results = run_with(batcher, work)
    assert [r.probabilities.tolist() for r in results] == [[4.0], [8.0]]


def test_not_ready_until_warm_up_and_a_failed_warm_up_is_reported() -> None:
    def bad_warm_up() -> None:
        raise RuntimeError("no memory")

    batcher = MicroBatcher(row_sums, max_batch_size=1, max_batch_delay_s=0.0, queue_limit=1, warm_up=bad_warm_up)
    assert batcher.alive and not batcher.ready
    with pytest.raises(NotReadyError, match="warming up"):
        batcher.submit(image(1.0))
    batcher.start()
    batcher.close()
    assert not batcher.alive
    assert batcher.status == "warm-up failed: no memory"


@pytest.mark.parametrize(
    "kwargs", [{"max_batch_size": 0}, {"queue_limit": 0}, {"max_batch_delay_s": -1.0}, {"concurrency": 0}]
)
def test_invalid_limits_are_refused(kwargs: dict[str, float]) -> None:
    limits: dict[str, float] = {"max_batch_size": 1, "max_batch_delay_s": 0.0, "queue_limit": 1, **kwargs}
    with pytest.raises(ValueError, match="got"):
        MicroBatcher(row_sums, **limits)


def test_a_job_still_queued_at_its_deadline_is_dropped_and_a_running_one_finishes() -> None:
    release = threading.Event()
    entered = threading.Event()
    seen: list[int] = []

    def blocked(batch: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        seen.append(len(batch))
        return row_sums(batch)

    batcher = MicroBatcher(blocked, max_batch_size=1, max_batch_delay_s=0.0, queue_limit=8)

    async def work(b: MicroBatcher) -> tuple[BatchResult, BaseException]:
        now = time.monotonic()
        first = asyncio.ensure_future(b.infer(image(1.0), deadline=now + 0.05))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        with pytest.raises(DeadlineExceededError, match="still queued at its 50 ms deadline") as late:
            await b.infer(image(2.0), deadline=time.monotonic() + 0.05)
        release.set()  # the first is past its deadline too, but a batch holds it
        return await first, late.value

    result, _ = run_with(batcher, work)
    assert result.probabilities.tolist() == [4.0]
    assert seen == [1]  # the dropped image never reached the model


def test_a_batch_with_an_explain_job_runs_the_explain_function() -> None:
    def explain(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return row_sums(batch), batch[:, :1] * 10

    batcher = MicroBatcher(row_sums, max_batch_size=4, max_batch_delay_s=0.05, queue_limit=8, explain=explain)

    async def work(b: MicroBatcher) -> list[BatchResult]:
        with b.preparing():
            pending = [b.infer(image(1.0)), b.infer(image(2.0), explain=True)]
            return list(await asyncio.gather(*pending))

    plain, explained = run_with(batcher, work)
    assert plain.heatmaps is None  # in the same batch, but it did not ask
    assert explained.heatmaps is not None and explained.heatmaps.tolist() == [[[20.0, 20.0], [20.0, 20.0]]]
    assert plain.batch_size == explained.batch_size == 2


def test_expected_wait_counts_the_images_ahead_at_the_recent_seconds_per_image() -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        return row_sums(batch)

    batcher = MicroBatcher(slow, max_batch_size=2, max_batch_delay_s=0.0, queue_limit=8)

    async def work(b: MicroBatcher) -> tuple[float, float, float, float | None]:
        before = b.expected_wait_s()
        release.set()
        await asyncio.gather(*(b.infer(image(1.0)) for _ in range(2)))  # timed: one batch or two
        per_image = b.expected_wait_s()  # nothing ahead: 0
        release.clear()
        entered.clear()
        held = asyncio.ensure_future(b.infer(image(2.0)))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(b.infer(image(3.0))) for _ in range(3)]
        await asyncio.sleep(0.01)  # let the three reach the queue
        ahead, seconds_per_image = b.expected_wait_s(), b._seconds_per_image
        release.set()
        await asyncio.gather(held, *queued)
        return before, per_image, ahead, seconds_per_image

    before, idle, ahead, seconds_per_image = run_with(batcher, work)
    assert before == 0.0 and idle == 0.0  # untimed, then nothing ahead
    assert seconds_per_image is not None and seconds_per_image > 0
    assert ahead == pytest.approx(4 * seconds_per_image)  # 1 running + 3 queued


def test_an_idle_model_runs_an_image_inline_and_a_busy_one_leaves_it_to_the_queue() -> None:
    release = threading.Event()
    entered = threading.Event()
    threads: list[str] = []
    sizes: list[int] = []

    def gated(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(10)
        return row_sums(batch)

    batcher = MicroBatcher(
        gated,
        max_batch_size=4,
        max_batch_delay_s=0.0,
        queue_limit=8,
        inline_when_idle=True,
        on_batch=lambda n, _: sizes.append(n),
    )

    async def work(b: MicroBatcher) -> tuple[BatchResult | None, BatchResult | None, BatchResult, BatchResult]:
        release.set()
        idle = await asyncio.to_thread(b.run_inline, image(1.0))  # the model is free: run on this thread
        release.clear()
        entered.clear()
        held = asyncio.ensure_future(asyncio.to_thread(b.run_inline, image(2.0)))
        while not entered.is_set():  # an inline run holds the model
            await asyncio.sleep(0.001)
        busy = b.run_inline(image(3.0))  # the model is busy: None, the caller queues it
        queued = asyncio.ensure_future(b.infer(image(3.0)))
        while b.depth != 1:  # it waits for the model, still counted as queued
            await asyncio.sleep(0.001)
        assert b.run_inline(image(4.0)) is None  # something is queued: no jumping ahead of it
        release.set()
        inline_result = await held
        assert inline_result is not None
        return idle, busy, inline_result, await queued

    idle, busy, held, queued = run_with(batcher, work)
    assert idle is not None and idle.probabilities.tolist() == [4.0] and idle.batch_size == 1
    assert busy is None
    assert held.probabilities.tolist() == [8.0]
    assert queued.probabilities.tolist() == [12.0]
    assert threads[0] != "inference-worker" and threads[-1] == "inference-worker"  # inline, then the worker
    assert sizes == [1, 1, 1]  # inline runs are timed and observed as batches of one


def test_inline_runs_are_off_unless_asked_for() -> None:
    batcher = MicroBatcher(row_sums, max_batch_size=4, max_batch_delay_s=0.0, queue_limit=8)

    async def work(b: MicroBatcher) -> BatchResult | None:
        return await asyncio.to_thread(b.run_inline, image(1.0))

    assert run_with(batcher, work) is None


def test_two_lanes_run_two_model_calls_at_once_and_no_more() -> None:
    release = threading.Event()
    running = 0
    most = 0
    count_lock = threading.Lock()

    def counted(batch: np.ndarray) -> np.ndarray:
        nonlocal running, most
        with count_lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with count_lock:
            running -= 1
        return row_sums(batch)

    shared_calls = 0

    def shared(batch: np.ndarray) -> np.ndarray:
        nonlocal shared_calls
        shared_calls += 1
        return counted(batch)

    batcher = MicroBatcher(
        counted,
        max_batch_size=1,
        max_batch_delay_s=0.0,
        queue_limit=8,
        inline_when_idle=True,
        concurrency=2,
        predict_shared=shared,
    )

    async def work(b: MicroBatcher) -> list[BatchResult | None]:
        first = asyncio.ensure_future(asyncio.to_thread(b.run_inline, image(1.0)))
        while running < 1:
            await asyncio.sleep(0.001)
        assert shared_calls == 0  # alone: the main predict function
        inline = [first, asyncio.ensure_future(asyncio.to_thread(b.run_inline, image(2.0)))]
        while running < 2:  # both lanes taken by inline runs
            await asyncio.sleep(0.001)
        assert b.run_inline(image(3.0)) is None  # no third lane
        queued = asyncio.ensure_future(b.infer(image(3.0)))
        await asyncio.sleep(0.05)
        assert running == 2 and b.depth == 1  # the worker waits for a lane
        release.set()
        return [*(await asyncio.gather(*inline)), await queued]

    results = run_with(batcher, work)
    assert [r.probabilities.tolist() for r in results if r is not None] == [[4.0], [8.0], [12.0]]
    assert most == 2
    assert shared_calls >= 1  # the second call, made while the first ran, used the shared function
