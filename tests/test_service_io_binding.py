"""The CUDA serving path, run on the CPU provider: I/O binding with preallocated buffers per batch shape (padded
buckets as on CUDA), warm-up of every shape, the CUDA provider options and batch defaults from the settings.
No GPU here: the binding code is the same on both providers, only the buffers' memory (pinned on CUDA) differs;
bench/gpu_proof.sh runs it on CUDA."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import onnxruntime as ort
import pytest
from service_support import kermany_images, post_image, reference_probabilities, running_server, tiny_model

from service.binding import BUCKET_STEPS, BoundSession, batch_buckets
from service.config import BUNDLED_MODEL, Settings
from service.model import CudaOptions, load_model


def bound_run(bound: BoundSession, batch: np.ndarray) -> np.ndarray:
    (probabilities,) = bound.run(batch)
    return probabilities


def random_batch(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, 1, 28, 28)).astype(np.float32)


def plain(batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(tiny_model()), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"input": batch})[0])


def test_batch_buckets() -> None:
    assert batch_buckets(5, pad=False) == (1, 2, 3, 4, 5)  # the CPU: every size, no padding
    assert batch_buckets(64, pad=True) == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    assert batch_buckets(40, pad=True)[-2:] == (32, 40)  # the limit itself is always a shape
    assert all(b / a <= 1.5 for a, b in itertools.pairwise(BUCKET_STEPS[3:]))  # at most 1/3 padding
    with pytest.raises(ValueError, match="at least 1"):
        batch_buckets(0, pad=True)


def test_bound_session_pads_to_buckets_and_matches_a_plain_run() -> None:
    session = ort.InferenceSession(str(tiny_model()), providers=["CPUExecutionProvider"])
    bound = BoundSession(session, input_name="input", output_shapes={"probabilities": (1,)},
                         input_shape=(1, 28, 28), buckets=batch_buckets(8, pad=True), pinned=False)  # fmt: skip
    assert bound.bucket(5) == 6 and bound.bucket(7) == 8 and bound.memory == "pageable"
    bound_run(bound, random_batch(6, seed=1))  # fills the 6-bucket; a batch of 5 then runs beside a stale row
    for size in (1, 5, 7, 8):
        batch = random_batch(size, seed=size)
        result = bound_run(bound, batch)
        assert result.shape == (size, 1)
        np.testing.assert_allclose(result, plain(batch), rtol=0, atol=1e-6)
    first = bound_run(bound, random_batch(2, seed=2))
    bound_run(bound, random_batch(2, seed=3))
    np.testing.assert_allclose(first, plain(random_batch(2, seed=2)), atol=1e-6)  # answers are copies, not views
    with pytest.raises(ValueError, match="larger than the largest bucket, 8"):
        bound_run(bound, random_batch(9))
    with pytest.raises(ValueError, match="expected \\[N, 1, 28, 28\\]"):
        bound_run(bound, np.zeros((1, 1, 27, 28), dtype=np.float32))


def test_pinned_buffers_are_registered_and_fall_back_to_pageable() -> None:
    """The CUDA memory path on the CPU provider: every buffer goes through the pinning function (a stand-in
    for cudaHostRegister, which needs a GPU), once per buffer; when it fails the buffers stay pageable."""
    session = ort.InferenceSession(str(tiny_model()), providers=["CPUExecutionProvider"])
    registered: list[tuple[int, ...]] = []

    def pin(array: np.ndarray) -> bool:
        registered.append(array.shape)
        return True

    bound = BoundSession(session, input_name="input", output_shapes={"probabilities": (1,)},
                         input_shape=(1, 28, 28), buckets=(1, 4), pinned=True, pin=pin)  # fmt: skip
    bound.prepare()
    assert bound.memory == "pinned" and registered == [(1, 1, 28, 28), (1, 1), (4, 1, 28, 28), (4, 1)]
    np.testing.assert_allclose(bound_run(bound, random_batch(3)), plain(random_batch(3)), atol=1e-6)
    failing = BoundSession(session, input_name="input", output_shapes={"probabilities": (1,)},
                           input_shape=(1, 28, 28), buckets=(1,), pinned=True, pin=lambda array: False)  # fmt: skip
    np.testing.assert_allclose(bound_run(failing, random_batch(1)), plain(random_batch(1)), atol=1e-6)
    assert failing.memory == "pageable"
    from service.binding import cuda_host_register

    assert cuda_host_register(np.zeros(4, dtype=np.float32)) is False  # no CUDA runtime here: not pinned


def test_threads_have_their_own_buffers() -> None:
    model = load_model(tiny_model(), provider="cpu", io_binding=True, max_batch_size=4)
    assert model.bound is not None
    expected = {seed: plain(random_batch(3, seed)) for seed in range(4)}
    failures: list[str] = []

    def hammer(seed: int) -> None:
        for _ in range(50):
            if not np.allclose(model.predict(random_batch(3, seed)), expected[seed], atol=1e-6):
                failures.append(f"thread {seed} got another thread's answer")
                return

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_warm_up_runs_every_batch_shape() -> None:
    model = load_model(tiny_model(), provider="cpu", io_binding=True, max_batch_size=5)
    assert model.bound is not None and model.batch_shapes == (1, 2, 3, 4, 5)
    seen: list[int] = []
    run = model.session.run_with_iobinding
    model.session.run_with_iobinding = lambda binding, *a: (  # type: ignore[method-assign]
        seen.append(binding.get_outputs()[0].shape()[0]),
        run(binding, *a),
    )[1]
    model.warm_up()
    assert seen == [1, 2, 3, 4, 5]
    unbound = load_model(tiny_model(), provider="cpu")
    assert unbound.bound is None and unbound.batch_shapes == (1,)  # the CPU default: plain session.run
    np.testing.assert_allclose(model.predict(random_batch(5)), unbound.predict(random_batch(5)), atol=1e-6)


def test_binding_carries_the_ood_score_output() -> None:
    """The bundled model has a second output (ood_score [N]): it is bound too, and answers as unbound."""
    bound = load_model(BUNDLED_MODEL, provider="cpu", io_binding=True, max_batch_size=3)
    plain_model = load_model(BUNDLED_MODEL, provider="cpu")
    assert bound.has_ood and bound.bound is not None
    bound.warm_up()
    batch = np.random.default_rng(0).standard_normal((3, *bound.input_shape)).astype(np.float32)
    (p_bound, s_bound), (p_plain, s_plain) = bound.predict(batch), plain_model.predict(batch)  # type: ignore[misc]
    np.testing.assert_allclose(p_bound, p_plain, atol=1e-6)
    np.testing.assert_allclose(s_bound, s_plain, rtol=1e-5, atol=1e-6)
    assert s_bound.shape == (3,) and s_bound.dtype == np.float64


def test_cuda_provider_options_and_batch_defaults() -> None:
    options = CudaOptions(device_id=1, cudnn_conv_algo_search="heuristic", mem_limit_mb=2048).provider_options()
    assert options["device_id"] == "1" and options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert options["arena_extend_strategy"] == "kSameAsRequested" and options["gpu_mem_limit"] == str(2048 * 2**20)
    assert "gpu_mem_limit" not in CudaOptions(mem_limit_mb=0).provider_options()
    assert CudaOptions().provider_options()["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    settings = Settings()
    assert settings.batch_limits("CPUExecutionProvider") == (16, 0.005)
    assert settings.batch_limits("CUDAExecutionProvider") == (64, 0.002)
    assert Settings(max_batch_size=8, max_batch_delay_ms=0).batch_limits("CUDAExecutionProvider") == (8, 0.0)
    assert (settings.cuda_device, settings.cudnn_conv_algo_search, settings.io_binding) == (0, "exhaustive", "auto")
    assert Settings(cudnn_conv_algo_search="HEURISTIC", io_binding="ON", decoder="Host").decoder == "host"


def test_service_with_io_binding_on_the_cpu_answers_like_onnxruntime() -> None:
    """A real server with SERVE_IO_BINDING=on: the bound path behind /predict, warmed at every shape."""
    settings = Settings(model_path=tiny_model(), io_binding="on", max_batch_size=4, inline_idle="off")
    images = kermany_images(3)
    with running_server(settings) as server, server.client() as client:
        for path in images:
            data = path.read_bytes()
            response = post_image(client, data)
            assert response.status_code == 200, response.text
            probability = response.json()["results"][0]["predictions"][0]["probability"]
            assert probability == pytest.approx(float(reference_probabilities(tiny_model(), data)[0]), abs=1e-5)


def test_cuda_binding_with_pinned_buffers_matches_the_cpu() -> None:
    """On a GPU (bench/gpu_proof.sh): the CUDA session through pinned bound buffers answers as the CPU does."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu and a GPU: bench/gpu_proof.sh)")
    model = load_model(tiny_model(), provider="cuda", max_batch_size=8)  # io_binding None: on for CUDA
    assert model.provider == "CUDAExecutionProvider" and model.bound is not None
    model.bound.prepare()
    assert model.bound.memory == "pinned"  # cudaHostRegister worked: the CUDA runtime is loaded
    model.warm_up()
    for size in (1, 5, 8):
        np.testing.assert_allclose(model.predict(random_batch(size, seed=size)), plain(random_batch(size, seed=size)),
                                   atol=1e-4)  # fmt: skip
