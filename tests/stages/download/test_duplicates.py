import numpy as np
import pyarrow as pa

from curation.stages.download.duplicates import in_range, repeated_rows


def test_repeated_rows_exact_and_in_order():
    urls = pa.chunked_array([["a", "b", None, "a"], ["b", "c", "a", "", "", None, "A"]])
    pairs = repeated_rows(urls)
    assert pairs.tolist() == [[3, 0], [4, 1], [6, 0]]  # nulls, empty strings and case variants are not repeats
    assert pairs.dtype == np.int64
    assert in_range(pairs, 4, 7).tolist() == [[4, 1], [6, 0]]
    assert repeated_rows(pa.chunked_array([], pa.string())).shape == (0, 2)
