"""The dedup stage's pool: the alive images of the features step's tables, and their side-file rows.

Read by the graph step (the whole pool, but only its per-partition sizes:
``scalars=False``) and by each of its helpers (their range of partitions,
with keys, side-file rows and areas).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.layout import committed_partitions, partition_path

# The features table's columns the pool reads (a partition without any described image lacks them).
FEATURE_COLUMNS = pa.schema(
    [("key", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("feature_row", pa.int64())]
)


class Pool:
    """The alive images of the features tables (or of ``parts`` only), in pool order (partition, then row).

    Per image (node ``i``): ``keys`` (Arrow strings), ``feature_row`` into its
    partition's side files, ``area``. Partition ``parts[j]`` holds nodes
    ``offsets[j]:offsets[j + 1]``. ``inputs``: rows that entered the stage alive.
    With ``scalars=False`` no per-image array is held (side-file rows are read
    again, one partition at a time, when asked for).
    """

    def __init__(self, step_dir: Path, parts: list[int] | None = None, scalars: bool = True):
        self.step_dir, self.scalars = step_dir, scalars
        self.parts = committed_partitions(step_dir) if parts is None else list(parts)
        keys, rows, area, sizes, self.inputs = [], [], [], [0], 0
        for p in self.parts:
            t, dropped_earlier = self._alive(p)
            self.inputs += dropped_earlier
            sizes.append(t.num_rows)
            if scalars:
                # 64-bit offsets: a billion keys are more than 2 GB of characters.
                keys.append(t["key"].combine_chunks().cast(pa.large_string()))
                rows.append(t["feature_row"].to_numpy())
                area.append(t["width"].to_numpy() * t["height"].to_numpy())
        self.keys = pa.concat_arrays(keys) if keys else pa.array([], pa.large_string())
        self.feature_row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.area = np.concatenate(area).astype(np.int64) if area else np.zeros(0, np.int64)
        self.offsets = np.cumsum(sizes)

    def _alive(self, p: int) -> tuple[pa.Table, int]:
        """Partition ``p``'s alive rows (key, width, height, feature_row) and its rows that entered the stage."""
        t = tables.read_parquet(self._file(p, "parquet"))
        earlier = pc.fill_null(pc.not_equal(t["dropped_by"], "dedup"), False)  # dropped before this stage
        entered = t.num_rows - int(pc.sum(earlier).as_py() or 0)
        t = t.filter(pc.equal(t["status"], tables.SUCCESS))
        if "feature_row" not in t.column_names:  # a partition without any described image
            t = FEATURE_COLUMNS.empty_table()
        return t.select(FEATURE_COLUMNS.names), entered

    def keys_of(self, p: int) -> pa.Array:
        """Keys of partition ``p``'s alive images (any partition of the features step, in pool order)."""
        t = tables.read_parquet(self._file(p, "parquet"), columns=["key", "status"])
        return t.filter(pc.equal(t["status"], tables.SUCCESS))["key"].combine_chunks().cast(pa.large_string())

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _file(self, p: int, suffix: str) -> Path:
        return partition_path(self.step_dir, p, suffix)

    def ranges(self) -> Iterator[tuple[int, int, int]]:
        for j, p in enumerate(self.parts):
            yield p, int(self.offsets[j]), int(self.offsets[j + 1])

    def arrays(self, suffix: str, nodes: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Side-file rows of every node (or of sorted ``nodes``), partition by partition."""
        for p, a, b in self.ranges():
            lo, hi = (a, b) if nodes is None else np.searchsorted(nodes, [a, b])
            if hi > lo:
                ids = np.arange(lo, hi) if nodes is None else nodes[lo:hi]
                rows = self.feature_row[ids] if self.scalars else self._alive(p)[0]["feature_row"].to_numpy()[ids - a]
                yield np.load(self._file(p, suffix), mmap_mode="r", allow_pickle=False)[rows]

    def gather(self, suffix: str, nodes: np.ndarray) -> np.ndarray:
        return np.concatenate(list(self.arrays(suffix, nodes)))
