"""`curate plan`: the LVD-142M pipeline reproduces the paper's Table 15."""

from __future__ import annotations

import pytest

from curation import config as cfg
from curation.plan import format_plan, plan_command, plan_rows, totals

# Table 15 of the DINOv2 paper: (dataset / split, images, retrieval, retrieved, final).
TABLE_15 = [
    ("ImageNet-22k / -", 14_197_086, "as_is", None, 14_197_086),
    ("ImageNet-22k / -", 14_197_086, "sample", 56_788_344, 56_788_344),
    ("ImageNet-1k / train", 1_281_167, "sample", 40_997_344, 40_997_344),
    ("Caltech 101 / train", 3_030, "cluster", 2_630_000, 1_000_000),
    ("CUB-200-2011 / train", 5_994, "cluster", 1_300_000, 1_000_000),
    ("DTD / train1", 1_880, "cluster", 1_580_000, 1_000_000),
    ("FGVC-Aircraft / train", 3_334, "cluster", 1_170_000, 1_000_000),
    ("Flowers-102 / train", 1_020, "cluster", 1_060_000, 1_000_000),
    ("Food-101 / train", 75_750, "cluster", 21_670_000, 1_000_000),
    ("Oxford-IIIT Pet / trainval", 3_680, "cluster", 2_750_000, 1_000_000),
    ("Stanford Cars / train", 8_144, "cluster", 7_220_000, 1_000_000),
    ("SUN397 / train1", 19_850, "cluster", 18_950_000, 1_000_000),
    ("Pascal VOC 2007 / train", 2_501, "cluster", 1_010_000, 1_000_000),
    ("ADE20K / train", 20_210, "cluster", 20_720_000, 1_000_000),
    ("Cityscapes / train", 2_975, "cluster", 1_390_000, 1_000_000),
    ("Pascal VOC 2012 (seg.) / trainaug", 1_464, "cluster", 10_140_000, 1_000_000),
    ("Mapillary SLS / train", 1_434_262, "as_is", None, 1_434_262),
    ("KITTI / train (Eigen)", 23_158, "cluster", 3_700_000, 1_000_000),
    ("NYU Depth V2 / train", 24_231, "cluster", 10_850_000, 1_000_000),
    ("SUN RGB-D / train", 4_829, "cluster", 4_870_000, 1_000_000),
    ("Google Landmarks v2 / train (clean)", 1_580_470, "as_is", None, 1_580_470),
    ("Google Landmarks v2 / train (clean)", 1_580_470, "sample", 6_321_880, 6_321_880),
    ("AmsterTime / new", 1_231, "cluster", 960_000, 960_000),
    ("AmsterTime / old", 1_231, "cluster", 830_000, 830_000),
    ("Met / train", 397_121, "cluster", 62_860_000, 1_000_000),
    ("Revisiting Oxford / base", 4_993, "cluster", 3_680_000, 1_000_000),
    ("Revisiting Paris / base", 6_322, "cluster", 3_660_000, 1_000_000),
]


def lvd142m_data() -> dict:
    return cfg.read_yaml(cfg.resolve_pipeline_path("lvd142m"))


def test_lvd142m_reproduces_table_15_exactly():
    rows = plan_rows(cfg.validate(lvd142m_data()))
    got = [(r.title, r.images, r.mode, r.retrieved, r.final) for r in rows]
    assert got == TABLE_15
    assert totals(rows) == {"as_is": 17_211_818, "sample": 104_107_568, "cluster": 20_790_000, "total": 142_109_386}
    assert not any(r.upper_bound for r in rows)  # keep_duplicates: exact counts
    for r in rows:
        if r.mode == "sample":
            assert r.retrieved in (r.images * 4, r.images * 32)


def test_lvd142m_paper_figures_in_the_other_sections():
    config = cfg.validate(lvd142m_data())
    assert config.cluster.k == 100_000 and config.cluster.mode == "flat"
    assert config.dedup.copy_dedup.k == 64 and config.dedup.copy_dedup.threshold == 0.6
    assert config.dedup.relative.threshold == 0.45
    cluster_rows = [d for d in config.retrieve.datasets if d.mode == "cluster"]
    assert len(cluster_rows) == 21
    assert {(d.per_cluster, d.min_queries, d.cap) for d in cluster_rows} == {(10_000, 3, 1_000_000)}
    assert config.retrieve.index.kind == "ivf_pq"


def test_plan_command_accepts_placeholders_and_prints_the_table():
    text = plan_command(lvd142m_data())
    assert text.startswith("pipeline lvd142m: expected composition")
    for title, *_ in TABLE_15:
        assert title in text
    for number in ("142,109,386", "17,211,818", "104,107,568", "20,790,000", "62,860,000"):
        assert number in text
    last = [line for line in text.splitlines() if line.strip().startswith("Total ")]
    assert last[-1].split()[-1] == "142,109,386"


def test_cli_plan_prints_the_table(capsys):
    from curation.cli import main

    assert main(["plan", "pipeline=lvd142m"]) == 0
    assert "142,109,386" in capsys.readouterr().out


def _small(tmp_path, datasets, collisions="best", curated=None):
    return {
        "name": "small",
        "run_dir": str(tmp_path / "run"),
        "stages": ["embed", "retrieve"],
        "embed": {"model": {"kind": "random", "arch": "vit_small16"}, "curated": curated or []},
        "retrieve": {"datasets": datasets, "collisions": collisions},
    }


def test_best_policy_marks_upper_bounds_and_caps_sample_mode(tmp_path):
    curated = [{"name": "q", "path": "<Q>", "size": 1000}]
    datasets = [
        {"name": "q_knn", "source": "q", "mode": "sample", "k": 8, "cap": 5000},
        {"name": "q_cl", "source": "q", "mode": "cluster", "expected_clusters": 7, "per_cluster": 100},
    ]
    rows = plan_rows(cfg.validate(_small(tmp_path, datasets, curated=curated)))
    assert [(r.retrieved, r.final, r.upper_bound) for r in rows] == [(8000, 5000, True), (700, 700, True)]
    text = format_plan(rows)
    assert "<=5,000" in text and "<=5,700" in text and "collisions: best" in text


def test_unknown_sizes_and_counted_folders(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "cls").mkdir(parents=True)
    for i in range(3):
        (folder / "cls" / f"{i}.jpg").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    curated = [{"name": "counted", "path": str(folder)}, {"name": "unknown", "path": "<U>"}]
    datasets = [
        {"name": "a", "source": "counted", "mode": "sample", "k": 2},
        {"name": "b", "source": "unknown", "mode": "as_is"},
        {"name": "c", "source": "counted", "mode": "cluster"},
    ]
    rows = plan_rows(cfg.validate(_small(tmp_path, datasets, "keep_duplicates", curated)))
    assert [(r.images, r.retrieved, r.final) for r in rows] == [(3, 6, 6), (None, None, None), (3, None, None)]
    assert totals(rows)["total"] is None
    text = format_plan(rows)
    assert "?: query-set size unknown" in text


def test_plan_without_retrieve_section_is_a_config_error(tmp_path):
    from curation.errors import ConfigError

    data = _small(tmp_path, [])
    data["stages"] = ["embed"]
    del data["retrieve"]
    with pytest.raises(ConfigError, match="retrieve"):
        plan_command(data)


def test_run_refuses_the_placeholders(tmp_path):
    from curation.errors import ConfigError
    from curation.runner.local import run_stages

    with pytest.raises(ConfigError, match=r"embed\.curated\.0\.path: '<IMAGENET22K>' is a placeholder"):
        run_stages(tmp_path / "run", lvd142m_data(), ["retrieve", "shard"])
    assert not (tmp_path / "run").exists()
