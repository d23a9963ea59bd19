"""onnxruntime I/O binding: every batch shape the model is run with has its input and output buffers made once.

Without binding, each `session.run` allocates its output and, on CUDA, copies the input from pageable memory
(the driver stages it through a bounce buffer first). Here a batch is written into a preallocated input buffer
and the probabilities land in a preallocated output buffer, both bound to the session once per shape. On CUDA both
are page-locked ("pinned") with `cudaHostRegister`, so onnxruntime's copies to and from the GPU are one DMA each;
onnxruntime's Python API has no pinned allocator to ask, and host memory the driver has registered is pinned
whatever onnxruntime calls it. Where pinning fails (no CUDA runtime) the buffers stay pageable, with a log line.

Shapes: batches are padded up to the next of a few batch sizes (`batch_buckets`), so a model sees a handful of
shapes, each allocated, planned and (with cuDNN's exhaustive search) tuned during warm-up, never on a request.
The padding rows hold whatever the buffer held before (finite inputs of earlier batches) and their outputs
are dropped. Buffers belong to the thread that runs the model (thread-local): two lanes never share one.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

# Batch sizes a padded batch is rounded up to: at most a third of a batch is padding (from 4 on).
BUCKET_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CUDA_RUNTIMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")  # onnxruntime.preload_dlls loads the first
Pin = Callable[[np.ndarray], bool]  # page-lock an array's memory in place; False when it cannot


@functools.cache
def _cudart() -> ctypes.CDLL | None:
    for name in CUDA_RUNTIMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_host_register(array: np.ndarray) -> bool:
    """Page-lock `array`'s memory for DMA (`cudaHostRegister`), unregistered when the array is freed."""
    runtime = _cudart()
    if runtime is None:
        return False
    pointer, size = ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes)
    if runtime.cudaHostRegister(pointer, size, ctypes.c_uint(0)) != 0:
        return False
    weakref.finalize(array, runtime.cudaHostUnregister, pointer)
    return True


def batch_buckets(max_batch_size: int, *, pad: bool) -> tuple[int, ...]:
    """The batch sizes the model is run with: every size up to `max_batch_size` without padding (the CPU,
    where padding costs compute), else `BUCKET_STEPS` up to it and `max_batch_size` itself."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if not pad:
        return tuple(range(1, max_batch_size + 1))
    return (*(size for size in BUCKET_STEPS if size < max_batch_size), max_batch_size)


@dataclass
class _Buffers:
    binding: ort.IOBinding
    inputs: np.ndarray  # the memory `values[0]` wraps
    outputs: list[np.ndarray]  # the memory `values[1:]` wrap, in the order of `output_shapes`
    values: list[ort.OrtValue]


class BoundSession:
    """Runs float32 [N, C, H, W] batches through `session` with I/O binding, padded to `buckets`.

    `output_shapes` names the float32 outputs to bind and each one's shape after the batch axis (probabilities
    [N, L]: `(L,)`; a score [N]: `()`)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        input_name: str,
        output_shapes: dict[str, tuple[int, ...]],
        input_shape: tuple[int, int, int],
        buckets: Iterable[int],
        pinned: bool,
        pin: Pin = cuda_host_register,
    ) -> None:
        self.session = session
        self.input_name, self.output_shapes = input_name, dict(output_shapes)
        self.input_shape = input_shape
        self.buckets = tuple(sorted(set(buckets)))
        self.memory = "pinned" if pinned else "pageable"  # what the buffers are: "pageable" if pinning fails
        self._pin = pin
        self._local = threading.local()

    @property
    def max_batch_size(self) -> int:
        return self.buckets[-1]

    def bucket(self, size: int) -> int:
        """The smallest bucket that holds `size` images."""
        for bucket in self.buckets:
            if bucket >= size:
                return bucket
        raise ValueError(f"a batch of {size} images is larger than the largest bucket, {self.max_batch_size}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """float32 [N, C, H, W] -> fresh [N, ...] arrays, one per output (the buffers are reused by the next batch)."""
        size = len(batch)
        if batch.shape[1:] != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"batch has shape {list(batch.shape)}, expected [N, {expected}]")
        buffers = self._buffers(self.bucket(size))
        buffers.inputs[:size] = batch
        self.session.run_with_iobinding(buffers.binding)
        return [np.array(output[:size], copy=True) for output in buffers.outputs]

    def prepare(self) -> None:
        """Allocate and bind every bucket's buffers for the calling thread (the warm-up does this)."""
        for bucket in self.buckets:
            self._buffers(bucket)

    def _buffers(self, bucket: int) -> _Buffers:
        table: dict[int, _Buffers] | None = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = {}
        if bucket not in table:
            table[bucket] = self._allocate(bucket)
        return table[bucket]

    def _allocate(self, bucket: int) -> _Buffers:
        input_value, inputs = self._buffer((bucket, *self.input_shape))
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, input_value)
        values, outputs = [input_value], []
        for name, tail in self.output_shapes.items():
            value, array = self._buffer((bucket, *tail))
            binding.bind_ortvalue_output(name, value)
            values.append(value)
            outputs.append(array)
        return _Buffers(binding, inputs, outputs, values)

    def _buffer(self, shape: tuple[int, ...]) -> tuple[ort.OrtValue, np.ndarray]:
        """A zeroed float32 host buffer of `shape` (pinned when asked for) as an OrtValue wrapping its memory."""
        array = np.zeros(shape, dtype=np.float32)
        if self.memory == "pinned" and not self._pin(array):
            logger.warning("could not page-lock the I/O buffers (no CUDA runtime?); copies to the GPU stay staged")
            self.memory = "pageable"
        return ort.OrtValue.ortvalue_from_numpy(array), array  # the OrtValue wraps the array's memory
