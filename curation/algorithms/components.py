"""Connected components of a graph given as streamed edge chunks.

A vectorised union-find: the only per-node state is one ``parent`` array
(int64, 8 bytes per node: 8 GB per billion nodes). Edges arrive in chunks of
arrays and are never stored; each chunk is merged with array operations
(hooking plus path halving), so the hot path has no per-edge Python loop and
the memory does not grow with the number of edges.

Invariant: every root is the smallest node id of its component (a root is
only ever hooked under a smaller root), so the final labels are the same
whatever the order of the edges and chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def new_parent(n: int) -> np.ndarray:
    """Parent array of ``n`` singleton components: shape (n,), int64."""
    return np.arange(n, dtype=np.int64)


def find(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Roots of ``nodes`` (any shape, int); halves the paths it walks."""
    cur = np.asarray(nodes, dtype=np.int64).ravel()
    while True:
        up = parent[cur]
        upup = parent[up]
        moving = up != upup
        if not moving.any():
            return up.reshape(np.shape(nodes))
        # Path halving: point each walked node to its grandparent. Duplicate
        # entries in ``cur`` write the same value, so the order is irrelevant.
        parent[cur[moving]] = upup[moving]
        cur = np.where(moving, upup, up)


def union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Merge the components of each edge ``(u[i], v[i])``, in place.

    Each round hooks the larger root of every unmerged edge under the
    smallest root it is linked to (``np.minimum.at`` resolves edges that
    share a root), then re-finds the roots; rounds repeat until every edge
    of the chunk joins one component.
    """
    ru = find(parent, np.asarray(u, dtype=np.int64))
    rv = find(parent, np.asarray(v, dtype=np.int64))
    while True:
        open_ = ru != rv
        if not open_.any():
            return
        ru, rv = ru[open_], rv[open_]
        hi, lo = np.maximum(ru, rv), np.minimum(ru, rv)
        np.minimum.at(parent, hi, lo)
        ru, rv = find(parent, hi), find(parent, lo)


def labels(parent: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """Component label of every node (its smallest node id): shape (n,), int64."""
    out = np.empty_like(parent)
    for start in range(0, len(parent), chunk):
        idx = np.arange(start, min(start + chunk, len(parent)), dtype=np.int64)
        out[start : start + len(idx)] = find(parent, idx)
    return out


def connected_components(n: int, edges: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Labels of the components of ``n`` nodes under streamed edge chunks.

    ``edges`` yields pairs of int arrays ``(u, v)`` of equal length; node ids
    are in ``[0, n)``. Returns shape (n,) int64: the smallest node id of each
    node's component.
    """
    parent = new_parent(n)
    for u, v in edges:
        if len(u):
            union(parent, u, v)
    return labels(parent)


def component_sizes(comp: np.ndarray) -> np.ndarray:
    """Size of each node's component: shape (n,), int64."""
    _, inverse, counts = np.unique(comp, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.int64)


def representatives(comp: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Index of the kept node of each node's component: shape (n,), int64.

    The kept node is the one with the smallest ``rank`` (shape (n,), any
    orderable dtype) in its component; ties go to the smallest node index.
    """
    n = len(comp)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), rank, comp))
    sorted_comp = comp[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_comp[1:] != sorted_comp[:-1]
    # Position of each sorted node's group start -> the group's best node.
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rep = np.empty(n, dtype=np.int64)
    rep[order] = order[group_start]
    return rep


# Status codes of :func:`decide`, in funnel order.
KEPT, HASH_DUPLICATE, COPY_DUPLICATE, BENCHMARK_LEAK = range(4)


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
    which the dedup stage runs over the touched nodes only.

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
