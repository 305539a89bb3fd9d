"""Stage embed, in-process: a tiny random-weight ViT over a two-partition pool."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import tables
from curation.atomic import read_json, write_json
from curation.errors import ConfigError
from curation.runner.local import run_stages
from curation.stages.base import files_dir, partition_path
from curation.stages.embed import arrays as embeddings
from curation.stages.registry import get_stage

MODEL = {
    "kind": "random",
    "arch": "vit_small_patch16",
    "image_size": 32,
    # A 1-block, 32-wide ViT: fast on CPU; seeded random weights.
    "options": {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 32, "seed": 7},
}


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    from skimage import data

    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return [jpeg(img) for img in images] + [jpeg(np.ascontiguousarray(img[::-1])) for img in images]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, data in members.items():
            for name, blob in ((f"{key}.jpg", data), (f"{key}.json", json.dumps({"key": key}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


def write_input_table(run_dir: Path, partition: int, keys: list[str], status: list[str]) -> None:
    """The upstream (dedup) table of one partition, committed, and the stage marked complete."""
    step = run_dir / "stages" / "dedup" / get_stage("dedup").table_step
    dropped = [None if s == tables.SUCCESS else "dedup" for s in status]
    tables.write_parquet(
        tables.status_table(keys, status, dropped), step / f"{tables.partition_name(partition)}.parquet"
    )
    write_json(partition_path(step, partition, "stats.json"), {"rows": len(keys), "counts": {}})
    write_json(run_dir / "stages" / "dedup" / "_SUCCESS.json", {"stage": "dedup"})


@pytest.fixture
def pool(tmp_path, photos):
    """Partition 0: 4 images, one corrupt, one dropped upstream; partition 1: 4 images, one missing."""
    k = [tables.sample_key(0, i) for i in range(6)]
    write_tar(
        tmp_path / "stages/download/fetch.files/part-000000.tar",
        {k[0]: photos[0], k[1]: photos[1], k[2]: b"\xff\xd8 corrupt", k[3]: photos[2], k[5]: photos[3]},
    )
    write_input_table(tmp_path, 0, k[:6], ["success", "success", "success", "success", "duplicate_copy", "success"])
    k1 = [tables.sample_key(1, i) for i in range(4)]
    write_tar(
        tmp_path / "stages/download/fetch.files/part-000001.tar", {k1[0]: photos[4], k1[1]: photos[5], k1[3]: photos[6]}
    )
    write_input_table(tmp_path, 1, k1, ["success"] * 4)
    return tmp_path


def config(run_dir, **embed):
    section = {"model": MODEL, "batch_size": 2, "device": "cpu", "storage_dtype": "float32", "decode_threads": 2}
    return {"name": "t", "run_dir": str(run_dir), "stages": ["embed"], "embed": {**section, **embed}}


def reference_embeddings(blobs: list[bytes]) -> np.ndarray:
    import torch

    from curation.models.checkpoints import load_model
    from curation.models.inference import decode_batch
    from curation.preprocess import PreprocessSpec, normalise

    model = load_model("random", None, MODEL["arch"], **MODEL["options"])
    pixels = decode_batch(blobs, PreprocessSpec(image_size=32)).pixels
    with torch.inference_mode():
        out = model(normalise(pixels)).float()
    return torch.nn.functional.normalize(out, dim=1).numpy()


def test_embed_pool_tables_arrays_and_failures(pool, photos):
    run_stages(pool, config(pool), ["embed"])
    root = pool / "stages" / "embed" / "pool"
    t0 = pq.read_table(root / "part-000000.parquet")
    assert t0.column_names == ["key", "status", "dropped_by", "error", "embedding_row"]
    assert t0.column("status").to_pylist() == [
        "success",
        "success",
        "failed_decode:unidentified_image",
        "success",
        "duplicate_copy",
        "success",
    ]
    assert t0.column("dropped_by").to_pylist() == [None, None, "embed", None, "dedup", None]
    assert t0.column("embedding_row").to_pylist() == [0, 1, -1, 2, -1, 3]
    assert t0.column("error").to_pylist()[2]
    t1 = pq.read_table(root / "part-000001.parquet")
    assert t1.column("status").to_pylist()[2] == "failed_decode:missing_image"
    assert t1.column("embedding_row").to_pylist() == [0, 1, -1, 2]
    x0 = np.load(files_dir(root) / "part-000000.npy")
    assert x0.shape == (4, 32) and x0.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x0, axis=1), 1.0, atol=1e-5)
    # Same numbers as the model run directly on the same preprocessing.
    np.testing.assert_allclose(x0, reference_embeddings([photos[0], photos[1], photos[2], photos[3]]), atol=1e-5)
    stats = read_json(files_dir(root) / "part-000000.stats.json")
    assert stats["embedded"] == 4 and stats["failed_decode"] == 1
    assert stats["model"]["random_weights"] is True and stats["model"]["kind"] == "random"
    assert stats["model"]["dim"] == 32 and stats["model"]["device"] == "cpu"
    keys, x, partitions, rows = embeddings.load_pool_embeddings(pool)
    assert keys.tolist() == [tables.sample_key(0, i) for i in (0, 1, 3, 5)] + [
        tables.sample_key(1, i) for i in (0, 1, 3)
    ]
    assert partitions.tolist() == [0, 0, 0, 0, 1, 1, 1] and rows.tolist() == [0, 1, 3, 5, 0, 1, 3]
    np.testing.assert_array_equal(x[:4], x0)


def test_embed_curated_datasets(pool, photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("curated")
    for i, (cls, blob) in enumerate([("cat", photos[1]), ("cat", photos[5]), ("dog", photos[0]), ("dog", b"bad")]):
        (folder / cls).mkdir(exist_ok=True)
        (folder / cls / f"{i}.jpg").write_bytes(blob)
    cfg = config(pool, storage_dtype="float16", curated=[{"name": "pets", "kind": "folder", "path": str(folder)}])
    run_stages(pool, cfg, ["embed"])
    root = pool / "stages" / "embed" / "curated"
    assert sorted(p.name for p in root.glob("pets.*")) == ["pets.npy", "pets.parquet"]
    keys, x, meta = embeddings.load_curated_embeddings(pool, "pets")
    assert keys.tolist() == ["pets-00000000", "pets-00000001", "pets-00000002"]
    assert x.dtype == np.float32 and x.shape == (3, 32)
    assert np.load(root / "pets.npy").dtype == np.float16
    assert meta.column("label").to_pylist() == ["cat", "cat", "dog"]
    assert meta.column("path").to_pylist() == ["cat/0.jpg", "cat/1.jpg", "dog/2.jpg"]
    table = pq.read_table(root / "pets.parquet")
    assert table.column("status").to_pylist()[3] == "failed_decode:unidentified_image"
    np.testing.assert_allclose(x, reference_embeddings([photos[1], photos[5], photos[0]]), atol=2e-3)
    stats = read_json(root / "_SUCCESS.json")
    assert stats["datasets"]["pets"] == {"images": 4, "embedded": 3, "failed_decode": 1}
    assert stats["model"]["random_weights"] is True


def test_config_checks(pool):
    with pytest.raises(ConfigError, match="embed.model.path"):
        run_stages(pool, config(pool, model={**MODEL, "kind": "dinov2"}), ["embed"])
    with pytest.raises(ConfigError, match="embed.curated.0.path"):
        run_stages(pool, config(pool, curated=[{"name": "x", "path": str(pool / "nowhere")}]), ["embed"])
    with pytest.raises(ConfigError, match="embed.model.kind"):
        run_stages(pool, config(pool, model={**MODEL, "kind": "clip"}), ["embed"])
    weights = pool / "backbone.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match="embed.model.arch: model kind 'curation' takes its architecture"):
        run_stages(pool, config(pool, model={**MODEL, "kind": "curation", "path": str(weights)}), ["embed"])
    assert not (pool / "stages/embed").exists()  # refused before any work


def test_model_that_does_not_give_features_is_found_before_any_work(tmp_path):
    import torch

    from curation import config as cfg
    from curation.stages.registry import get_stage

    path = tmp_path / "identity.pt"
    torch.jit.script(torch.nn.Identity()).save(str(path))
    data = config(tmp_path / "run", model={"kind": "torchscript", "path": str(path), "image_size": 32})
    problems = get_stage("embed").preflight(cfg.validate(data))
    assert len(problems) == 1 and problems[0].startswith(
        "embed.model: the model does not load or run on a 32x32 "
        "image: CheckpointError: the TorchScript model returned "
        "(1, 3, 32, 32), not features"
    )
    assert get_stage("embed").preflight(cfg.validate(config(tmp_path / "run"))) == []


def test_curated_sets_embedded_in_partitions_give_the_same_files(pool, photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    for i, blob in enumerate([photos[1], photos[5], b"bad", photos[0], photos[2]]):
        (folder / f"{i}.jpg").write_bytes(blob)
    empty = tmp_path_factory.mktemp("empty")
    sets = [{"name": "five", "path": str(folder)}, {"name": "none", "path": str(empty)}]
    outputs = {}
    for size in (2, 100):
        run_dir = tmp_path_factory.mktemp(f"size{size}")
        for path in pool.rglob("*"):  # the upstream pool, copied
            if path.is_file() and "stages/embed" not in path.as_posix():
                target = run_dir / path.relative_to(pool)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        run_stages(run_dir, config(run_dir, curated=sets, curated_partition_size=size), ["embed"])
        parts = sorted(p.name for p in (run_dir / "stages/embed/curated_parts.files").glob("*.stats.json"))
        # five images in partitions of 2: three partitions, then one (empty) for the empty set
        assert len(parts) == (4 if size == 2 else 2)
        outputs[size] = {
            name: (
                pq.read_table(run_dir / f"stages/embed/curated/{name}.parquet").to_pylist(),
                np.load(run_dir / f"stages/embed/curated/{name}.npy"),
            )
            for name in ("five", "none")
        }
    for name in ("five", "none"):
        assert outputs[2][name][0] == outputs[100][name][0]
        np.testing.assert_array_equal(outputs[2][name][1], outputs[100][name][1])
    rows = outputs[2]["five"][0]
    assert [r["embedding_row"] for r in rows] == [0, 1, -1, 2, 3]
    assert rows[2]["status"] == "failed_decode:unidentified_image"
    assert outputs[2]["none"][0] == [] and outputs[2]["none"][1].shape[0] == 0
