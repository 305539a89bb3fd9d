"""Components, representatives and dedup decisions over the nodes an edge touches, never the whole pool.

At pool scale almost every image is in no pair and no edge: it is its own
component, kept, and needs no state. Here node ids are global (up to the
pool size ``N`` and beyond) but every array is sized by the touched nodes
``t``: the union-find runs on their ranks in the sorted unique touched ids
(``np.unique`` / ``searchsorted``), so it costs ``O(t)``, not ``O(N)``.
Labels are the smallest global id of each component (the compaction keeps
the order), exactly those of :func:`curation.algorithms.components.connected_components`
over all ``N`` nodes.

Id spaces that skip a sorted set of removed ids (the hash survivors skip the
hash duplicates) are mapped without materialising either space
(:func:`expand` and :func:`compact`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np

from curation.algorithms import components as cc

Edges = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass
class Sparse:
    """Components over touched nodes: ``nodes`` ``(t,)`` sorted global ids, ``labels`` ``(t,)`` the smallest
    global id of each one's component. Every other node is a singleton."""

    nodes: np.ndarray
    labels: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.nodes.nbytes + self.labels.nbytes


def touched_components(edges: Edges, batch: int = 1 << 22) -> Sparse:
    """Components of the graph whose edge chunks ``edges()`` yields (called twice: the touched ids, then
    the unions), in ``O(touched nodes)`` memory plus one chunk."""
    nodes = touched(edges(), batch)
    parent = cc.new_parent(len(nodes))
    for u, v in edges():
        if len(u):
            cc.union(parent, np.searchsorted(nodes, u), np.searchsorted(nodes, v))
    return Sparse(nodes, nodes[cc.labels(parent)])


def touched(chunks: Iterable[tuple[np.ndarray, np.ndarray]], batch: int = 1 << 22) -> np.ndarray:
    """Sorted unique ids of the edge ends. Chunks' unique ids wait until they outnumber ``batch`` and the
    ids found so far, then merge: each id is sorted a few times, not once per chunk, and at most about
    twice the touched ids are held."""
    nodes, pending, waiting = np.zeros(0, np.int64), [], 0
    for u, v in chunks:
        pending.append(np.unique(np.concatenate([u, v]).astype(np.int64)))
        waiting += len(pending[-1])
        if waiting > max(len(nodes), batch):
            nodes, pending, waiting = np.unique(np.concatenate([nodes, *pending])), [], 0
    return np.unique(np.concatenate([nodes, *pending]))


def representatives(graph: Sparse, rank: np.ndarray) -> np.ndarray:
    """Global id ``(t,)`` of the kept node of each touched node's component: the smallest ``rank`` (one per
    touched node), ties to the smallest id."""
    compact = np.searchsorted(graph.nodes, graph.labels)
    return graph.nodes[cc.representatives(compact, rank)]


def lookup(nodes: np.ndarray, values: np.ndarray, ids: np.ndarray, default: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``ids`` equals sorted ``nodes[i]``, else ``default`` (same shape as ``ids``)."""
    if not len(nodes):
        return np.asarray(default).copy()
    at = np.minimum(np.searchsorted(nodes, ids), len(nodes) - 1)
    return np.where(nodes[at] == ids, values[at], default)


def expand(ids: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Ids of a space that skips sorted ``removed`` ids, back to the full space; ``shift`` is
    ``removed - arange(len(removed))`` (:func:`shift_of`)."""
    ids = np.asarray(ids, np.int64)
    return ids + np.searchsorted(shift, ids, side="right")


def shift_of(removed: np.ndarray) -> np.ndarray:
    return np.asarray(removed, np.int64) - np.arange(len(removed), dtype=np.int64)


def compact(ids: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Full-space ``ids`` (none of them removed) in the space that skips sorted ``removed``."""
    ids = np.asarray(ids, np.int64)
    return ids - np.searchsorted(removed, ids)


def benchmark_hits(graph: Sparse, first_bench: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pool nodes, benchmark index)``: each touched pool node (id < ``first_bench``) whose component holds
    a benchmark node (``first_bench + j``), with the smallest such ``j``."""
    compact_label = np.searchsorted(graph.nodes, graph.labels)
    bench = graph.nodes >= first_bench
    none = np.iinfo(np.int64).max
    first = np.full(len(graph.nodes), none, np.int64)
    np.minimum.at(first, compact_label[bench], graph.nodes[bench] - first_bench)
    hit = first[compact_label]
    has = (hit != none) & ~bench
    return graph.nodes[has], hit[has]


# Status codes, in funnel order (those of :mod:`curation.algorithms.components`).
KEPT, HASH_DUPLICATE, COPY_DUPLICATE, BENCHMARK_LEAK = cc.KEPT, cc.HASH_DUPLICATE, cc.COPY_DUPLICATE, cc.BENCHMARK_LEAK


@dataclass
class Records:
    """The decisions of the images that differ from the default, sorted by global ``ids``.

    Default (an image no edge touched): kept, ``ref`` -1, ``component`` its own id, ``size`` 1, ``hit``
    -1, ``count`` 0. Same meaning as the dense funnel the tests check it against
    (``tests/algorithms/dense_funnel.py``), plus ``count``: images dropped in favour of this one (hash groups
    and copy components together).
    """

    ids: np.ndarray
    status: np.ndarray
    ref: np.ndarray
    component: np.ndarray
    size: np.ndarray
    hit: np.ndarray
    count: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))


def decide(
    hash_nodes: np.ndarray,
    hash_rep: np.ndarray,
    copy: Sparse,
    copy_rep: np.ndarray,
    leak_nodes: np.ndarray,
    leak_hit: np.ndarray,
) -> Records:
    """The funnel over touched nodes: hash groups (``hash_rep`` per sorted ``hash_nodes``), copy components
    over the survivors (``copy_rep`` per ``copy.nodes``), then benchmark hits (``leak_hit`` per sorted
    ``leak_nodes``); a leak removes a kept image, not the copies dropped in its favour."""
    is_hdup, is_cdup = hash_rep != hash_nodes, copy_rep != copy.nodes
    hdup, href = hash_nodes[is_hdup], hash_rep[is_hdup]
    cdup, cref = copy.nodes[is_cdup], copy_rep[is_cdup]
    hfinal = lookup(cdup, cref, href, href)  # a hash group's kept image may itself be a copy
    final, count = np.unique(np.concatenate([cref, hfinal]), return_counts=True)
    ids = np.unique(np.concatenate([hdup, copy.nodes, leak_nodes, final]).astype(np.int64))
    r = len(ids)
    out = Records(
        ids,
        np.zeros(r, np.int8),
        np.full(r, -1),
        ids.copy(),
        np.ones(r, np.int64),
        np.full(r, -1),
        np.zeros(r, np.int64),
    )
    at = np.searchsorted(ids, hdup)
    out.status[at], out.ref[at], out.component[at], out.size[at] = HASH_DUPLICATE, href, -1, 0
    at = np.searchsorted(ids, copy.nodes)
    out.component[at], out.size[at] = copy.labels, cc.component_sizes(copy.labels)
    at = np.searchsorted(ids, cdup)
    out.status[at], out.ref[at] = COPY_DUPLICATE, cref
    at = np.searchsorted(ids, leak_nodes)
    out.hit[at] = leak_hit
    out.status[at] = np.where(out.status[at] == KEPT, BENCHMARK_LEAK, out.status[at])
    out.count[np.searchsorted(ids, final)] = count
    return out
