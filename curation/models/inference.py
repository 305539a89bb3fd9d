"""Batched model inference fed by decode threads: the one path from image bytes to model outputs.

Every step that runs a model on images (the dedup descriptors, the embeddings)
holds one :class:`Inference` per worker: the model on its device and
precision, and a pool of decode threads sized from the worker's CPUs. Per
input batch, :meth:`Inference.submit` starts reading and decoding on the
threads and returns at once; :meth:`Inference.forward` runs the model on the
decoded pixels. :class:`Prefetch` wires the two into a map step, so that the
next batch decodes while the model runs on the current one: the device waits
for decoding only when all the threads together cannot keep up (the decoders
release the GIL, so they use as many CPUs as there are threads).

What "decode" means is the step's: any function of encoded bytes that returns
a value with ``pixels`` ((H, W, 3) uint8) or the pixels themselves, and raises
``curation.preprocess.DecodeError`` for a bad image (a reason, never an
exception for the step).
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from curation.errors import ConfigError
from curation.preprocess import IMAGENET_MEAN, IMAGENET_STD, DecodeError, PreprocessSpec, decode, normalise

PRECISIONS = ("bf16", "fp16", "fp32")


def decode_thread_count(configured: int, num_cpus: float) -> int:
    """Decode threads of a worker: ``configured``, or 0 for two per CPU it holds.

    A decode thread holds the GIL for part of every image (header parsing,
    glue) and the worker's other threads take it too; a second thread per CPU
    runs native decoding while the first waits for the GIL or for a read.
    """
    return configured or max(1, 2 * math.ceil(num_cpus))


@dataclass
class Decoded:
    """Decoding of B inputs: ``values[i]`` what decode returned (None where it failed);
    ``reasons``/``errors`` per input, None where it succeeded."""

    values: list[Any]
    reasons: list[str | None]
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        """``(B,)`` bool: decoded."""
        pairs = zip(self.values, self.reasons, strict=True)
        return np.array([r is None and v is not None for v, r in pairs], dtype=bool)


class Pending:
    """Decoding in flight on the threads; :meth:`result` waits for it."""

    def __init__(self, futures: list[Future], decoded: Decoded):
        self._futures = futures
        self._decoded = decoded

    def result(self) -> Decoded:
        for future in self._futures:
            future.result()  # re-raises what is not a DecodeError (an unreadable tar, ...)
        return self._decoded


def submit(
    items: Sequence[Any],
    decode: Callable[[bytes | None], Any],
    executor: Executor | None,
    fetch: Callable[[Any], bytes | None] | None = None,
) -> Pending:
    """Start decoding ``items`` on ``executor`` (None: here, now) and return.

    Items are encoded images, or anything ``fetch`` turns into one (a key read
    from a tar, say), so that reading happens on the threads too.
    """
    n = len(items)
    decoded = Decoded([None] * n, [None] * n, [None] * n)

    def one(i: int) -> None:
        try:
            decoded.values[i] = decode(fetch(items[i]) if fetch else items[i])
        except DecodeError as err:
            decoded.reasons[i], decoded.errors[i] = err.reason, str(err)[:500]

    if executor is None:
        for i in range(n):
            one(i)
        return Pending([], decoded)
    return Pending([executor.submit(one, i) for i in range(n)], decoded)


@dataclass
class DecodedBatch:
    """Result of :func:`decode_batch` for B inputs.

    ``pixels`` is ``(B, S, S, 3)`` uint8 (rows of failed images are zero);
    ``ok`` ``(B,)`` bool; ``reasons``/``errors`` per input, None where ok.
    """

    pixels: np.ndarray
    ok: np.ndarray
    reasons: list[str | None]
    errors: list[str | None]


class PendingBatch:
    """Decoding in flight on an executor; :meth:`result` waits and returns the :class:`DecodedBatch`."""

    def __init__(self, pending, image_size: int):
        self._pending = pending
        self._image_size = image_size

    def result(self) -> DecodedBatch:
        return stack(self._pending.result(), self._image_size)


def submit_batch(
    items: Sequence, spec: PreprocessSpec, executor: Executor | None, fetch: Callable | None = None
) -> PendingBatch:
    """Start decoding ``items`` into model inputs of ``spec`` on ``executor`` and return at once
    (see :func:`submit`: items may be keys that ``fetch`` reads)."""
    return PendingBatch(submit(items, functools.partial(decode, spec=spec), executor, fetch), spec.image_size)


def decode_batch(blobs: Sequence[bytes | None], spec: PreprocessSpec, executor: Executor | None = None) -> DecodedBatch:
    """Decode ``blobs`` into one ``(B, S, S, 3)`` uint8 array; on ``executor`` threads if given."""
    return submit_batch(blobs, spec, executor).result()


def stack(decoded, image_size: int) -> DecodedBatch:
    """A :class:`Decoded` of ``(S, S, 3)`` model inputs as one :class:`DecodedBatch`."""
    ok = decoded.ok
    pixels = np.zeros((len(ok), image_size, image_size, 3), dtype=np.uint8)
    for i in np.flatnonzero(ok):
        pixels[i] = decoded.values[i]
    return DecodedBatch(pixels, ok, list(decoded.reasons), list(decoded.errors))


class Inference:
    """A model on one device, fed by decode threads.

    ``device``: auto (a GPU when this worker sees one), cuda or cpu.
    ``precision``: autocast dtype on a GPU (a CPU always runs fp32).
    ``batch_size``: images per forward pass. ``threads``: decode threads.
    ``dim``: output width, for an empty batch (None: known from the first batch).
    ``config_key``: the setting named when ``device`` is cuda and there is no GPU.
    """

    def __init__(
        self,
        model,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int = 64,
        threads: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dim: int | None = None,
        config_key: str = "device",
    ):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{config_key}: cuda requested but this worker sees no GPU")
        self.device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        self.cuda = self.device.type == "cuda"
        self.model = model.to(self.device).eval()
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        self.autocast = dtype if self.cuda else None
        self.precision = precision if self.autocast else "fp32"
        self.batch_size = batch_size
        self.mean = tuple(mean or IMAGENET_MEAN)
        self.std = tuple(std or IMAGENET_STD)
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.dim = dim

    def submit(
        self,
        items: Sequence[Any],
        decode: Callable[[bytes | None], Any],
        fetch: Callable[[Any], bytes | None] | None = None,
    ) -> Pending:
        """Start decoding ``items`` on this worker's threads (see :func:`submit`)."""
        return submit(items, decode, self.pool, fetch)

    def forward(self, pixels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """``B`` images ``(H, W, 3) uint8`` -> model outputs ``(B, dim) float32``, in input order.

        Images are grouped by shape, then cut into batches of ``batch_size``,
        so that every forward pass is one tensor.
        """
        shapes: dict[tuple, list[int]] = collections.defaultdict(list)
        for i, p in enumerate(pixels):
            shapes[p.shape].append(i)
        out: np.ndarray | None = None
        for rows in shapes.values():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                result = self._forward(np.stack([pixels[i] for i in chunk]))
                if out is None:
                    self.dim = result.shape[1]
                    out = np.empty((len(pixels), self.dim), dtype=np.float32)
                out[chunk] = result
        if out is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return out

    def probe(self, size: int) -> int:
        """The output width, from one black ``size`` x ``size`` image."""
        return int(self.forward(np.zeros((1, size, size, 3), np.uint8)).shape[1])

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        from contextlib import nullcontext

        import torch

        x = torch.from_numpy(pixels)
        if self.cuda:
            x = x.pin_memory()  # the copy to the device then overlaps
        x = normalise(x, self.mean, self.std, self.device)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast("cuda", dtype=self.autocast) if self.autocast else nullcontext()
        with torch.inference_mode(), amp:
            return self.model(x).float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {"device": self.device.type, "precision": self.precision, "decode_threads": self.threads}


R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Job(Protocol[R_co]):
    """Work in flight (:class:`Pending`, :class:`PendingBatch`): :meth:`result` waits for it."""

    def result(self) -> R_co: ...


class Prefetch(Generic[R]):
    """A map step's input batches, decoded one batch ahead of the model.

    ``submit(batch)`` starts decoding the rows of ``batch``. The step's
    ``prefetch(batch)`` (which the runner calls on the next batch before it
    processes the current one: ``curation.stages.base.MapStep.prefetch``)
    calls :meth:`start`; its ``process_batch`` calls :meth:`take`. A batch
    that was not started (a test calling ``process_batch`` directly) is
    decoded on the spot.
    """

    def __init__(self, submit: Callable[[Any], Job[R]]):
        self._submit = submit
        self._pending: collections.deque[tuple[list[Any], Job[R]]] = collections.deque()

    def start(self, batch) -> None:
        """Start decoding ``batch`` (the rows ``process_batch`` will get)."""
        self._pending.append((batch.column("key").to_pylist(), self._submit(batch)))

    def take(self, batch) -> R:
        """The decoding of ``batch`` (as ``process_batch`` received it)."""
        keys = batch.column("key").to_pylist()
        while self._pending:  # batches without alive rows never reach process_batch: skip theirs
            head_keys, job = self._pending.popleft()
            if head_keys == keys:
                return job.result()
        return self._submit(batch).result()

    def clear(self) -> None:
        self._pending.clear()
