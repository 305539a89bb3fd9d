import faiss
import numpy as np
import pytest

from curation.algorithms.kmeans import kmeans_plus_plus
from curation.algorithms.kmeans_sharded import (
    ArrayShards,
    FaissStream,
    combine,
    faiss_perm_head,
    partial_stats,
    split_empty,
    train_sharded,
)

# float32 rounding: Faiss sums in float32 in point order, the shards in float64.
ATOL, RTOL = 2e-6, 1e-5


def blobs(n: int, d: int, spherical: bool, seed: int = 0) -> np.ndarray:
    """Half the points in a tight blob and some exact duplicates: random seeds collide, clusters empty out."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[: n // 2] *= 0.01
    x[n // 2 : n // 2 + n // 10] = x[n // 2]
    if spherical:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def faiss_kmeans(
    x: np.ndarray,
    k: int,
    spherical: bool,
    n_iter: int = 10,
    seed: int = 5,
    n_redo: int = 1,
    init: np.ndarray | None = None,
) -> faiss.Kmeans:
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=n_iter,
        spherical=spherical,
        seed=seed,
        nredo=n_redo,
        min_points_per_centroid=1,
        max_points_per_centroid=len(x),
    )
    km.train(x, init_centroids=init)
    return km


def test_stream_and_permutation_are_faiss_own():
    rng = faiss.RandomGenerator(1234)
    expected = np.array([rng.rand_float() for _ in range(10_000)], dtype=np.float32)
    assert np.array_equal(FaissStream(1234).floats(10_000), expected)
    for n, seed in [(1, 3), (2, 9), (1000, 7), (100_003, 123)]:
        perm = np.zeros(n, dtype=np.int32)
        faiss.rand_perm(faiss.swig_ptr(perm), n, seed)
        assert np.array_equal(faiss_perm_head(n, 64, seed), perm[:64])


@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("shards", [1, 2, 4])
def test_centroids_equal_faiss_from_the_same_random_init(spherical, shards):
    x = blobs(3000, 8, spherical)
    km = faiss_kmeans(x, 64, spherical)
    assert sum(s["nsplit"] for s in km.iteration_stats) > 0  # the split rule is exercised
    result = train_sharded(ArrayShards(x, shards, spherical=spherical), 64, n_iter=10, spherical=spherical, seed=5)
    np.testing.assert_allclose(result.centroids, km.centroids, rtol=RTOL, atol=ATOL)
    assert result.objective == pytest.approx(km.obj[-1], rel=1e-5)


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_given_init_and_redos_follow_faiss(shards):
    x = blobs(2000, 16, True, seed=1)
    seeds = kmeans_plus_plus(x, 20, np.random.default_rng(0))
    km = faiss_kmeans(x, 20, True, n_redo=3, init=seeds)
    result = train_sharded(ArrayShards(x, shards, spherical=True), 20, n_iter=10, seed=5, n_redo=3, init=seeds)
    np.testing.assert_allclose(result.centroids, km.centroids, rtol=RTOL, atol=ATOL)
    km = faiss_kmeans(x, 20, True, n_redo=3)
    result = train_sharded(ArrayShards(x, shards, spherical=True), 20, n_iter=10, seed=5, n_redo=3)
    np.testing.assert_allclose(result.centroids, km.centroids, rtol=RTOL, atol=ATOL)


def test_result_is_the_same_for_any_split():
    x = blobs(5000, 12, True, seed=2)
    ref = train_sharded(ArrayShards(x, 1, spherical=True), 50, n_iter=8, seed=3)
    for shards in (2, 3, 4, 7):
        result = train_sharded(ArrayShards(x, shards, spherical=True), 50, n_iter=8, seed=3)
        assert np.array_equal(result.centroids, ref.centroids)


def test_as_many_points_as_clusters_copies_them():
    x = blobs(30, 4, False)
    result = train_sharded(ArrayShards(x, 3, spherical=False), 30, n_iter=5, spherical=False)
    assert np.array_equal(result.centroids, x)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        train_sharded(ArrayShards(x, 3, spherical=False), 31)


def test_partial_stats_add_up_to_the_whole():
    x = blobs(1000, 6, False, seed=4)
    centroids = x[:10].copy()
    whole = partial_stats(x, centroids, spherical=False)
    parts = combine(
        [
            partial_stats(x[:300], centroids, spherical=False, block=64),
            partial_stats(x[300:], centroids, spherical=False),
        ]
    )
    assert np.array_equal(parts.counts, whole.counts) and whole.counts.sum() == len(x)
    np.testing.assert_allclose(parts.sums, whole.sums, rtol=1e-12)
    labels = faiss.knn(x, centroids, 1)[1][:, 0]
    np.testing.assert_allclose(whole.sums[3], x[labels == 3].astype(np.float64).sum(axis=0), rtol=1e-12)


def faiss_split_reference(centroids: np.ndarray, hassign: np.ndarray, n: int) -> int:
    """Faiss' split_clusters, line for line, with Faiss' own generator."""
    k, d = centroids.shape
    rng = faiss.RandomGenerator(1234)
    nsplit = 0
    for ci in range(k):
        if hassign[ci] == 0:
            cj = 0
            while True:
                p = np.float32((float(hassign[cj]) - 1.0) / float(np.float32(n - k)))
                if np.float32(rng.rand_float()) < p:
                    break
                cj = (cj + 1) % k
            centroids[ci] = centroids[cj]
            for j in range(d):
                up, down = np.float32(1 + 1 / 1024), np.float32(1 - 1 / 1024)
                centroids[ci, j] *= up if j % 2 == 0 else down
                centroids[cj, j] *= down if j % 2 == 0 else up
            hassign[ci] = hassign[cj] / np.float32(2)
            hassign[cj] -= hassign[ci]
            nsplit += 1
    return nsplit


def test_split_refills_empty_clusters_as_faiss_does():
    rng = np.random.default_rng(3)
    k, d, n = 200, 5, 1000
    counts = rng.multinomial(n, rng.dirichlet(np.full(k, 0.3))).astype(np.float32)
    assert (counts == 0).sum() > 10
    centroids = rng.standard_normal((k, d)).astype(np.float32)
    expected_c, expected_h = centroids.copy(), counts.copy()
    empty = int((counts == 0).sum())
    assert faiss_split_reference(expected_c, expected_h, n) == empty
    assert split_empty(centroids, counts, n) == empty
    assert np.array_equal(centroids, expected_c) and np.array_equal(counts, expected_h)
    assert counts.sum() == n and (counts > 0).all()


def test_progress_counts_iterations():
    x = blobs(400, 4, True)
    seen = []
    train_sharded(ArrayShards(x, 2, spherical=True), 8, n_iter=3, n_redo=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 6) for i in range(1, 7)]
