"""Hashing throughput: the dedup stage's hashing vs ``imagehash.phash``, same images, same run.

Images: JPEGs (quality 90) cut from the photos shipped with scikit-image and
scikit-learn at web sizes (short side 300-800 px). One process, one thread.
Three settings, each timing ``imagehash.phash`` (image by image: grayscale,
Lanczos resize of the whole image, DCT) against ours (thumbnails by area
averaging, then one batched hash of the whole batch) on the same input:

1. decoded images at the model's input size (320x320 RGB arrays): what the
   dedup stage holds after its single decode, so the stage's hashing cost;
2. decoded images at full size (RGB arrays);
3. encoded bytes: imagehash decodes fully; ours decodes JPEGs at a reduced
   DCT scale straight to grayscale.

Each method runs ``--repeats`` times, interleaved; the best run counts (the
machine may be shared). It also times the features step's CPU work per image,
and the Hamming search (multi-index hashing vs brute force, ``--codes``).

    python bench/bench_hash.py --images 400 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def make_images(n: int, seed: int = 0) -> list[bytes]:
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    names = (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "camera",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "coins",
        "moon",
        "clock",
    )
    photos = [Image.fromarray(getattr(skimage.data, k)()).convert("RGB") for k in names]
    photos += [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = int(img.width * rng.uniform(0.6, 1)), int(img.height * rng.uniform(0.6, 1))
        x, y = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
        short = int(rng.integers(300, 800))
        scale = short / min(w, h)
        crop = img.crop((x, y, x + w, y + h)).resize((int(w * scale), int(h * scale)))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def imagehash_arrays(arrays: list[np.ndarray]) -> list:
    import imagehash
    from PIL import Image

    return [imagehash.phash(Image.fromarray(a)) for a in arrays]


def imagehash_bytes(blobs: list[bytes]) -> list:
    import imagehash
    from PIL import Image

    return [imagehash.phash(Image.open(io.BytesIO(b))) for b in blobs]


def ours(thumbs: np.ndarray, method: str, basis) -> np.ndarray:
    from curation.algorithms import pca_hash, phash

    if method == "pca":
        return pca_hash.hash_codes(pca_hash.features(thumbs), basis)
    return phash.phash_codes(thumbs)


def ours_arrays(arrays: list[np.ndarray], method: str, basis, batch: int = 256) -> np.ndarray:
    from curation.algorithms.pca_hash import thumbnails

    return np.concatenate(
        [ours(thumbnails(arrays[i : i + batch], 32), method, basis) for i in range(0, len(arrays), batch)]
    )


def ours_bytes(blobs: list[bytes], method: str, basis, batch: int = 256) -> np.ndarray:
    from curation.algorithms.pca_hash import decode_thumbnail

    out = []
    for start in range(0, len(blobs), batch):
        thumbs = np.stack([decode_thumbnail(b, 32)[0] for b in blobs[start : start + batch]])
        out.append(ours(thumbs, method, basis))
    return np.concatenate(out)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def hamming_search(n: int, radius: int, repeats: int) -> None:
    """Near pairs among ``n`` random 64-bit codes (10% planted copies): multi-index hashing vs brute force."""
    from curation.algorithms import hamming

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    copies = codes[: n // 10].copy()
    copies[:, 0] ^= 0b101  # 2 bits apart
    codes = np.vstack([codes, copies])
    counts = {}

    def run(method: str) -> None:
        counts[method] = sum(len(i) for i, _, _ in hamming.near_pairs(codes, radius, method))

    times = {m: best_time(lambda: run(m), repeats) for m in ("multihash", "flat")}
    assert counts["multihash"] == counts["flat"]
    print(f"Hamming pairs within {radius} bits among {len(codes)} codes ({counts['flat']} pairs), 1 thread")
    for method, seconds in times.items():
        print(f"  {method:10s} {len(codes) / seconds:9.0f} codes/s   x{times['flat'] / seconds:5.1f} vs brute force")


def report(title: str, times: dict[str, float], n: int) -> None:
    print(title)
    base = times["imagehash.phash"]
    for name, seconds in times.items():
        print(f"  {name:16s} {n / seconds:9.0f} img/s   x{base / seconds:5.1f} vs imagehash.phash")


def main() -> None:
    from PIL import Image

    from curation.algorithms import pca_hash
    from curation.models import sscd
    from curation.preprocess import PreprocessSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codes", type=int, default=200_000, help="codes for the Hamming search timing")
    args = parser.parse_args()
    hamming_search(args.codes, 4, 1)
    blobs = make_images(args.images)
    full = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    model_input = [np.asarray(Image.fromarray(a).resize((320, 320), Image.Resampling.BILINEAR)) for a in full]
    basis = pca_hash.fit(pca_hash.features(pca_hash.thumbnails(full, 32)), 64, 32)
    mb = sum(map(len, blobs)) / 1e6
    pixels = np.mean([a.shape[0] * a.shape[1] for a in full]) / 1e6
    print(f"{len(blobs)} JPEGs, {mb / len(blobs) * 1e3:.0f} KB and {pixels:.2f} Mpixel on average; 1 thread")
    settings = [
        (
            "1. decoded at the model input size (320x320), as in the dedup stage",
            model_input,
            imagehash_arrays,
            ours_arrays,
        ),
        ("2. decoded at full size", full, imagehash_arrays, ours_arrays),
        ("3. from JPEG bytes (ours: reduced-DCT-scale decode)", blobs, imagehash_bytes, ours_bytes),
    ]
    spec = sscd.FeatureSpec(PreprocessSpec(320, mode="square", interpolation="bilinear", draft=True), 32)
    seconds = best_time(lambda: pca_hash.thumbnails([sscd.decode(b, spec).pixels for b in blobs], 32), args.repeats)
    print(
        f"features-step CPU work per image (decode at reduced DCT scale, 320x320 resize, thumbnail): "
        f"{len(blobs) / seconds:.0f} img/s on one core"
    )
    for title, data, peer, mine in settings:
        times = {
            "imagehash.phash": best_time(lambda: peer(data), args.repeats),
            "ours, pca": best_time(lambda: mine(data, "pca", basis), args.repeats),
            "ours, phash": best_time(lambda: mine(data, "phash", basis), args.repeats),
        }
        report(title, times, len(blobs))


if __name__ == "__main__":
    main()
