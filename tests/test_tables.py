"""Status columns in Arrow: ``drop``, ``alive``, the key check and the status counts equal their list-based meaning."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest

from curation import tables
from curation.runner.partition import count_statuses


def list_drop(table: pa.Table, mask, stage: str, statuses, errors=None) -> pa.Table:
    """``drop`` as it was written with Python lists: the meaning the Arrow version keeps."""
    n = table.num_rows
    mask = np.asarray(mask, dtype=bool)

    def broadcast(values):
        if isinstance(values, str) or values is None:
            return np.full(n, values, dtype=object)
        return np.asarray(list(values), dtype=object)

    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    dropped = np.asarray(table.column("dropped_by").to_pylist(), dtype=object)
    error = np.asarray(table.column("error").to_pylist(), dtype=object)
    status[mask] = broadcast(statuses)[mask]
    dropped[mask] = stage
    if errors is not None:
        error[mask] = broadcast(errors)[mask]
    for name, values in (("status", status), ("dropped_by", dropped), ("error", error)):
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, table.schema.field(name), pa.array(values.tolist(), pa.string()))
    return table


def batch(n: int, chunks: int = 1) -> pa.Table:
    """``n`` rows: some already dropped upstream (with and without an error), a carried column, in chunks."""
    status = [tables.SUCCESS if i % 3 else "failed_download:http_404" for i in range(n)]
    dropped = [None if i % 3 else "download" for i in range(n)]
    error = [None if i % 3 or i % 2 else "404" for i in range(n)]
    table = tables.status_table([tables.sample_key(0, i) for i in range(n)], status, dropped, error)
    table = table.append_column("value", pa.array(range(n), pa.int64()))
    if chunks > 1 and n:
        size = -(-n // chunks)
        table = pa.concat_tables([table.slice(i, size) for i in range(0, n, size)])
    return table


CASES = {
    "some": (7, [True, False, True, False, False, True, False], "odd", None),
    "none": (4, [False] * 4, "odd", "never used"),
    "all": (5, [True] * 5, "odd", "every row"),
    "empty": (0, [], "odd", "nothing"),
    "per row": (4, [True, True, False, True], ["a", "b", "c", "d"], ["e0", None, "e2", None]),
    "null statuses given": (3, [True, False, True], [None, "x", None], None),
    "null error for all": (3, [True, True, False], "odd", [None, None, None]),
    "numpy values": (3, np.array([True, False, True]), np.array(["p", "q", "r"]), np.array(["u", "v", "w"])),
    "arrow values": (3, [False, True, True], pa.array(["p", "q", "r"]), pa.chunked_array([["u"], ["v", None]])),
}


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("case", CASES)
def test_drop_equals_the_list_version(case, chunks):
    n, mask, statuses, errors = CASES[case]
    table = batch(n, chunks)
    # Arrow values are new: the list version gets them as lists.
    as_list = [v.to_pylist() if isinstance(v, pa.Array | pa.ChunkedArray) else v for v in (statuses, errors)]
    expected = list_drop(table, mask, "parity", *as_list)
    got = tables.drop(table, mask, "parity", statuses, errors)
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()


def test_drop_refuses_values_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="mask"):
        tables.drop(batch(3), [True, False], "parity", "odd")
    with pytest.raises(ValueError, match="2 values for 3 rows"):
        tables.drop(batch(3), [True, False, True], "parity", ["a", "b"])


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_alive_and_counts_equal_the_list_version(n, chunks):
    table = batch(n, chunks)
    statuses = table.column("status").to_pylist()
    assert tables.alive(table).dtype == bool
    assert tables.alive(table).tolist() == [s == tables.SUCCESS for s in statuses]
    assert count_statuses(table) == dict(sorted(collections.Counter(statuses).items()))


KEYS = {
    "equal": (["a", "b", "c"], ["a", "b", "c"]),
    "empty": ([], []),
    "one differs": (["a", "b", "c"], ["a", "x", "c"]),
    "order": (["a", "b"], ["b", "a"]),
    "one lost": (["a", "b", "c"], ["a", "b"]),
    "one invented": (["a"], ["a", "b"]),
    "null in both": (["a", None], ["a", None]),
    "null in one": (["a", None], ["a", "b"]),
    "null against null elsewhere": ([None, "b"], ["a", None]),
}


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("case", KEYS)
def test_same_keys_equals_comparing_the_lists(case, chunked):
    a, b = KEYS[case]
    left = pa.table({"key": pa.array(a, pa.string())})
    right = pa.table({"key": pa.array(b, pa.string())})
    if chunked and len(b) > 1:
        right = pa.concat_tables([right.slice(0, 1), right.slice(1)])
    assert tables.same_keys(left, right) is (a == b)
