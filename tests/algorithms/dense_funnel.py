"""The dedup funnel over every node of a pool, densely: the reference the sparse funnel is checked against.

The dedup stage decides over the touched nodes only
(:func:`curation.algorithms.sparse_graph.decide`); this is the same funnel
written the plain way, with arrays over all ``n`` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.algorithms.components import (
    BENCHMARK_LEAK,
    COPY_DUPLICATE,
    HASH_DUPLICATE,
    KEPT,
    component_sizes,
    representatives,
)


@dataclass
class Decisions:
    """Per pool node (shape (n,) each).

    ``status``: int8 code (``KEPT``, ``HASH_DUPLICATE``, ``COPY_DUPLICATE``,
    ``BENCHMARK_LEAK``); ``ref``: the kept node of the node's hash group or
    copy component when it is a duplicate, else -1; ``component``: copy
    component label (the smallest node id in it), -1 for hash duplicates;
    ``component_size``: 0 for hash duplicates; ``hit``: index of a benchmark
    image in the node's leak component (the smallest), else -1.
    """

    status: np.ndarray
    ref: np.ndarray
    component: np.ndarray
    component_size: np.ndarray
    hit: np.ndarray


def decide(
    hash_rep: np.ndarray, survivors: np.ndarray, copy_labels: np.ndarray, leak_labels: np.ndarray, rank: np.ndarray
) -> Decisions:
    """The dedup funnel over ``n`` nodes: hash groups, then copy components, then leaks.

    Dense (arrays over every node): the reference of :func:`curation.algorithms.sparse_graph.decide`,
    which the dedup stage runs over the touched nodes only; the tests check it by hand.

    ``hash_rep`` (n,): kept node of each node's hash group; ``survivors`` (n1,):
    the nodes kept by hashing, in increasing order; ``copy_labels`` (n1,) and
    ``leak_labels`` (n1 + m,) (empty without benchmarks) are component labels
    in survivor index space (benchmark ``j`` is node ``n1 + j``); ``rank``
    (n1,): the keep policy (smallest kept). A copy component keeps one node;
    a leak component loses every pool node (the kept one included).
    """
    n, n1 = len(hash_rep), len(survivors)
    status = np.where(hash_rep != np.arange(n), HASH_DUPLICATE, KEPT).astype(np.int8)
    ref = np.where(status == HASH_DUPLICATE, hash_rep, -1).astype(np.int64)
    component = np.full(n, -1, np.int64)
    size = np.zeros(n, np.int64)
    component[survivors] = survivors[copy_labels]
    size[survivors] = component_sizes(copy_labels)
    rep = representatives(copy_labels, rank)
    dup = rep != np.arange(n1)
    status[survivors[dup]] = COPY_DUPLICATE
    ref[survivors[dup]] = survivors[rep[dup]]
    hit = np.full(n, -1, np.int64)
    total = len(leak_labels)
    if total > n1:
        first = np.full(total, total, np.int64)
        np.minimum.at(first, leak_labels[n1:], np.arange(n1, total))
        found = first[leak_labels[:n1]]
        has = found < total
        hit[survivors[has]] = found[has] - n1
        status[survivors[has & ~dup]] = BENCHMARK_LEAK
    return Decisions(status, ref, component, size, hit)
