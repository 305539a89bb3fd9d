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


# Status codes of the dedup funnel, in funnel order (:func:`curation.algorithms.sparse_graph.decide`).
KEPT, HASH_DUPLICATE, COPY_DUPLICATE, BENCHMARK_LEAK = range(4)
