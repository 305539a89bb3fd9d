"""The batched inference path: decoding on threads, batching by shape, decoding one batch ahead."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
import torch

from curation import tables
from curation.models.inference import Inference, Prefetch, submit
from curation.preprocess import DecodeError
from curation.runner.partition import read_ahead
from curation.stages.base import MapStep


class MeanColour(torch.nn.Module):
    """``(B, 3, H, W) -> (B, 3)``: the mean of each channel (exact, whatever the batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def image(value: int, h: int = 8, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def decode_value(data: bytes | None) -> np.ndarray:
    """Test decoder: b"<value>" -> an 8x8 image of that value; b"bad" -> a reason."""
    if data is None:
        raise DecodeError("missing_image", "no image bytes")
    if data == b"bad":
        raise DecodeError("broken_image", "bad bytes")
    return image(int(data))


def test_submit_turns_decode_errors_into_reasons_and_reads_on_the_threads():
    model = Inference(MeanColour(), "cpu", threads=2)
    store = {"a": b"10", "b": b"bad", "c": b"30"}
    readers = set()

    def fetch(key):
        readers.add(threading.current_thread().name)
        return store.get(key)

    decoded = model.submit(["a", "b", "missing", "c"], decode_value, fetch).result()
    assert decoded.ok.tolist() == [True, False, False, True]
    assert decoded.reasons == [None, "broken_image", "missing_image", None]
    assert decoded.errors[1] == "bad bytes" and decoded.errors[0] is None
    assert int(decoded.values[3][0, 0, 0]) == 30
    assert readers and all(name.startswith("decode") for name in readers)


def test_other_decoder_errors_reach_the_caller():
    def crash(data):
        raise RuntimeError("unreadable shard")

    with pytest.raises(RuntimeError, match="unreadable shard"):
        submit([b"1"], crash, Inference(MeanColour(), "cpu").pool).result()


def test_forward_groups_by_shape_and_keeps_input_order():
    model = Inference(MeanColour(), "cpu", batch_size=2, mean=(0, 0, 0), std=(1, 1, 1))
    pixels = [image(51), image(102, 4, 6), image(153), image(204), image(255, 4, 6)]
    out = model.forward(pixels)
    assert out.shape == (5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    assert model.forward([]).shape == (0, 3)  # the width is known from the first batch
    assert Inference(MeanColour(), "cpu", dim=3).forward([]).shape == (0, 3)
    assert Inference(MeanColour(), "cpu").probe(4) == 3


def batch_of(keys: list[str], statuses: list[str]) -> pa.Table:
    return tables.status_table(keys, statuses)


class Decodes(MapStep):
    """A map step on the one inference path: decodes its keys one batch ahead of the model."""

    def __init__(self, submit_batch, alive_only: bool = True):
        super().__init__(None)
        self.alive_only = alive_only
        self.decoding = Prefetch(submit_batch)

    def prefetch(self, batch: pa.Table) -> None:
        self.decoding.start(batch)


def test_the_runner_prefetches_the_next_batch_while_the_current_one_is_processed():
    started = []

    def start(batch):
        started.append(batch.column("key").to_pylist())
        return submit([k.encode() for k in started[-1]], decode_value, None)

    step = Decodes(start)
    first = batch_of(["1", "2"], [tables.SUCCESS] * 2)
    dead = batch_of(["3"], ["duplicate_copy"])
    mixed = batch_of(["4", "5"], ["duplicate_copy", tables.SUCCESS])
    stream = read_ahead(step, iter([first, dead, mixed]))
    # The next batch has started already; the batch without alive rows starts nothing.
    assert next(stream) is first and started == [["1", "2"]]
    assert [int(v[0, 0, 0]) for v in step.decoding.take(first).values] == [1, 2]
    assert next(stream) is dead and started == [["1", "2"], ["5"]]
    assert next(stream) is mixed
    # An alive-only step gets the alive rows.
    assert [int(v[0, 0, 0]) for v in step.decoding.take(mixed.filter(tables.alive(mixed))).values] == [5]
    other = batch_of(["7"], [tables.SUCCESS])  # never prefetched: decoded on the spot
    assert int(step.decoding.take(other).values[0][0, 0, 0]) == 7
    assert started[-1] == ["7"]
    # A step that takes every row gets them all prefetched.
    started.clear()
    list(read_ahead(Decodes(start, alive_only=False), iter([dead, mixed])))
    assert started == [["3"], ["4", "5"]]


def test_the_model_runs_while_the_next_batch_decodes():
    second_decoding = threading.Event()

    def decode(data):
        if data == b"2":
            second_decoding.set()
        return decode_value(data)

    seen = []

    class Waits(MeanColour):
        def forward(self, x):
            # The first forward pass waits for the second batch's decoding to begin.
            seen.append(second_decoding.wait(timeout=10))
            return super().forward(x)

    model = Inference(Waits(), "cpu", threads=2)
    step = Decodes(lambda b: model.submit([k.encode() for k in b.column("key").to_pylist()], decode), False)
    for batch in read_ahead(step, iter([batch_of(["1"], [tables.SUCCESS]), batch_of(["2"], [tables.SUCCESS])])):
        decoded = step.decoding.take(batch)
        model.forward([decoded.values[0]])
    assert seen == [True, True]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_names_the_setting():
    from curation.errors import ConfigError

    with pytest.raises(ConfigError, match="embed.device: cuda requested"):
        Inference(MeanColour(), "cuda", config_key="embed.device")
    assert Inference(MeanColour(), "auto").info() == {"device": "cpu", "precision": "fp32", "decode_threads": 1}
