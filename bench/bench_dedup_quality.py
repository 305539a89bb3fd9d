"""Dedup quality: precision and recall of the dedup stage vs imagehash, on a planted copy corpus.

The corpus (``curation.demo.planted``): 3x3 jittered tiles of every sample
photograph shipped with scikit-image and scikit-learn are the distinct images
(tiles of one photograph are the hard negatives); each gets ``--copies``
planted copies, cycling through re-encode, resize, small and 20% crops,
mirror, small rotation, padding, colour change and overlay. The images are
written where the download stage puts them and the real ``dedup`` stage runs
on them (in-process backend), once per mode; imagehash (pHash, pairs within
the radius, connected components, largest image kept) runs on the same bytes.

Precision: the share of dropped images whose kept image is a copy of the same
original. Recall: the share of planted copies that end with the same kept
image as their original. Copy detection with a real descriptor cannot be
measured here (no SSCD weights offline); random weights are refused.

    python bench/bench_dedup_quality.py --copies 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = {
    "pca hash, no variants": {"hashing": {"method": "pca", "variants": {"enabled": False}}},
    "pca hash + variants (default)": {"hashing": {"method": "pca"}},
    "phash, no variants": {"hashing": {"method": "phash", "variants": {"enabled": False}}},
    "phash + variants (the demo)": {"hashing": {"method": "phash"}},
    "pca hash + variants, radius 5": {"hashing": {"method": "pca", "variants": {"max_distance": 5}}},
    "phash + variants, no pixel check": {"hashing": {"method": "phash", "min_correlation": None}},
    "phash + variants, no rotations": {"hashing": {"method": "phash", "variants": {"rotations": []}}},
}


def write_download(run_dir: Path, data: list[bytes], partitions: int) -> list[str]:
    """The download stage's output for ``data``: status tables, tars, markers. Returns the keys in order."""
    from curation import tables
    from curation.stages.base import files_dir

    step = run_dir / "stages" / "download" / "fetch"
    side = files_dir(step)
    side.mkdir(parents=True)
    step.mkdir()
    keys = []
    for p, chunk in enumerate(np.array_split(np.arange(len(data)), partitions)):
        part = [tables.sample_key(p, i) for i in range(len(chunk))]
        keys += part
        tables.write_parquet(
            tables.status_table(part, ["success"] * len(part), [None] * len(part)),
            step / f"{tables.partition_name(p)}.parquet",
        )
        with tarfile.open(side / f"{tables.partition_name(p)}.tar", "w") as tar:
            for key, i in zip(part, chunk, strict=True):
                member = tarfile.TarInfo(f"{key}.jpg")
                member.size = len(data[i])
                tar.addfile(member, io.BytesIO(data[i]))
        (side / f"{tables.partition_name(p)}.stats.json").write_text(json.dumps({"rows": len(part)}))
    (run_dir / "stages" / "download" / "_SUCCESS.json").write_text("{}")
    return keys


def kept_of(rows: list[dict], keys: list[str]) -> np.ndarray:
    """Index of the image each image's dedup decision keeps, following ``duplicate_of`` to a kept image."""
    at = {k: i for i, k in enumerate(keys)}
    ref = {r["key"]: r["duplicate_of"] for r in rows}
    out = np.arange(len(keys))
    for i, key in enumerate(keys):
        while ref.get(key):
            key = ref[key]
        out[i] = at[key]
    return out


def run_mode(data: list[bytes], dedup: dict, partitions: int) -> tuple[np.ndarray, float]:
    import pyarrow.parquet as pq

    from curation.runner.local import run_stages

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        keys = write_download(run_dir, data, partitions)
        pipeline = {
            "name": "bench",
            "run_dir": str(run_dir),
            "stages": ["dedup"],
            "dedup": dedup,
            "runner": {"max_partition_retries": 0, "progress": False},
        }
        start = time.perf_counter()
        run_stages(run_dir, pipeline, ["dedup"])
        seconds = time.perf_counter() - start
        rows = []
        for path in sorted((run_dir / "stages" / "dedup" / "table").glob("part-*.parquet")):
            rows += pq.read_table(path, columns=["key", "status", "duplicate_of"]).to_pylist()
        assert all(r["status"] in ("success", "duplicate_hash") for r in rows), {r["status"] for r in rows}
        return kept_of(rows, keys), seconds


def imagehash_mode(data: list[bytes], radius: int) -> tuple[np.ndarray, float]:
    import imagehash
    from PIL import Image

    from curation.algorithms import components as cc

    start = time.perf_counter()
    hashes, area = [], []
    for blob in data:
        with Image.open(io.BytesIO(blob)) as img:
            hashes.append(np.packbits(imagehash.phash(img).hash.ravel()))
            area.append(img.width * img.height)
    codes = np.stack(hashes)
    bits = np.unpackbits(codes, axis=1).astype(np.int16)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    labels = cc.connected_components(len(data), [np.nonzero(np.triu(dist <= radius, 1))])
    kept = cc.representatives(labels, -np.array(area))
    return kept, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="planted copies per original")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--modes",
        default=",".join(str(i) for i in range(len(MODES))),
        help="comma-separated indexes into the dedup modes (default: all)",
    )
    parser.add_argument("--no-imagehash", action="store_true")
    parser.add_argument("--show-wrong", action="store_true", help="list each wrong drop: image -> kept image")
    args = parser.parse_args()
    from curation.demo import planted

    corpus = planted.build(args.copies, args.seed)
    group = np.array(corpus.group)
    originals = corpus.transform.count("original")
    print(
        f"corpus: {len(corpus.data)} images, {originals} originals, {len(corpus.data) - originals} planted copies "
        f"({args.copies} per original), load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    chosen = {int(i) for i in args.modes.split(",") if i}
    for i, (name, dedup) in enumerate(MODES.items()):
        if i in chosen:
            kept, seconds = run_mode(corpus.data, dedup, args.partitions)
            results[name] = (planted.score(group, kept, corpus.transform), seconds)
            wrong = np.flatnonzero((kept != np.arange(len(kept))) & (group[kept] != group))
            if args.show_wrong:
                print(name, "wrong drops:", [f"{corpus.names[i]} -> {corpus.names[kept[i]]}" for i in wrong])
    for radius in () if args.no_imagehash else (4, 8):
        kept, seconds = imagehash_mode(corpus.data, radius)
        results[f"imagehash pHash <= {radius}"] = (planted.score(group, kept, corpus.transform), seconds)
    transforms = list(planted.TRANSFORMS)
    print("\n| mode | precision | recall | wrong drops | distinct lost | seconds | " + " | ".join(transforms) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(transforms))
    for name, (s, seconds) in results.items():
        per = " | ".join(f"{s['per_transform'].get(t, 0):.2f}" for t in transforms)
        print(
            f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['wrong_drops']} | {s['distinct_lost']} | "
            f"{seconds:.1f} | {per} |"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
