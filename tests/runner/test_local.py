"""The driver and the partition commit protocol, in-process."""

import json

import pytest

from curation.atomic import TMP_MARK
from curation.errors import ConfigError, RunError
from curation.runner.local import run_stages
from tests.runner.helpers import read_tables, sample_pipeline


def test_run_writes_tables_stats_and_markers(tmp_path):
    report = run_stages(tmp_path, sample_pipeline(tmp_path))
    assert report.stages["parity"]["counts"] == {"odd": 20, "success": 20}
    mark = tmp_path / "stages/parity/mark"
    # The table folder holds only its Parquet parts; markers live beside it.
    assert sorted(p.name for p in mark.iterdir()) == [f"part-{i:06d}.parquet" for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "stages/parity/mark.files").iterdir()) == [
        f"part-{i:06d}.stats.json" for i in range(4)
    ]
    stats = json.loads((tmp_path / "stages/parity/mark.files/part-000002.stats.json").read_text())
    assert stats["rows"] == 10 and stats["counts"] == {"odd": 5, "success": 5}
    assert json.loads((tmp_path / "stages/parity/total/total.json").read_text()) == {
        "total": sum(v for p in range(4) for v in range(100 * p, 100 * p + 10) if v % 2 == 0)
    }
    rows = read_tables(tmp_path)["stages/parity/mark/part-000001.parquet"]
    assert [r["key"] for r in rows] == [f"000001{i:06d}" for i in range(10)]
    assert rows[1]["status"] == "odd" and rows[1]["dropped_by"] == "parity" and rows[1]["error"] == "value 101 is odd"
    assert rows[0]["dropped_by"] is None and rows[0]["half"] == 50
    # Side files are committed with their partition and listed in its stats.
    assert (tmp_path / "stages/numbers/make.files/part-000003.txt").read_text().count("\n") == 10
    assert (
        "part-000003.txt"
        in json.loads((tmp_path / "stages/numbers/make.files/part-000003.stats.json").read_text())["files"]
    )


def test_rerun_of_a_finished_run_does_no_work(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("part-*")}
    run_stages(tmp_path, sample_pipeline(tmp_path))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("part-*")} == before


def test_partial_and_corrupt_partitions_are_redone(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path), ["numbers"])
    expected = read_tables(tmp_path)
    make, side = tmp_path / "stages/numbers/make", tmp_path / "stages/numbers/make.files"
    (side / "part-000001.txt").write_text("truncated")  # size no longer matches its stats
    (side / "part-000002.stats.json").unlink()  # crashed before its marker
    (make / f"part-000002.parquet{TMP_MARK}dead").write_bytes(b"half a file")  # a table part's temporary
    (side / f"part-000002.txt{TMP_MARK}dead").write_bytes(b"half a file")  # a side file's
    (tmp_path / "stages/numbers/_SUCCESS.json").unlink()
    untouched = (make / "part-000000.parquet").stat().st_mtime_ns
    run_stages(tmp_path, sample_pipeline(tmp_path), ["numbers"])
    assert read_tables(tmp_path) == expected
    assert (make / "part-000000.parquet").stat().st_mtime_ns == untouched
    assert not list(make.glob(f"*{TMP_MARK}*")) and not list(side.glob(f"*{TMP_MARK}*"))
    assert (side / "part-000001.txt").read_text().count("\n") == 10


def test_failing_partition_is_retried_then_reported_and_run_stays_resumable(tmp_path):
    data = sample_pipeline(tmp_path, fail_partitions=[2])
    data["runner"] = {"max_partition_retries": 1}
    with pytest.raises(RunError, match=r"make partition 2: RuntimeError: partition 2 is configured to fail"):
        run_stages(tmp_path, data)
    make = tmp_path / "stages/numbers/make.files"
    assert sorted(p.name for p in make.glob("*.stats.json")) == [f"part-00000{i}.stats.json" for i in (0, 1, 3)]
    assert not (tmp_path / "stages/numbers/_SUCCESS.json").exists()
    # Fixed config: only the failed partition is done, then the rest of the pipeline.
    report = run_stages(tmp_path, sample_pipeline(tmp_path), force=True)
    assert report.stages["numbers"]["rows"] == 40


def test_transient_failure_recovers_with_retries(tmp_path):
    data = sample_pipeline(tmp_path, fail_once_dir=str(tmp_path / "flaky"))
    data["runner"] = {"max_partition_retries": 1}
    report = run_stages(tmp_path, data)
    assert report.stages["numbers"]["counts"] == {"success": 40}


def test_stage_needs_its_inputs(tmp_path):
    with pytest.raises(ConfigError, match="stage 'parity' reads the table of 'numbers'.*run stage=numbers first"):
        run_stages(tmp_path, sample_pipeline(tmp_path), ["parity"])
    run_stages(tmp_path, sample_pipeline(tmp_path), ["numbers"])
    assert run_stages(tmp_path, sample_pipeline(tmp_path), ["parity"]).stages["parity"]["rows"] == 40


def test_run_dir_with_another_config_is_refused_unless_forced(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path), ["numbers"])
    with pytest.raises(ConfigError, match=r"different config:\n  numbers.rows: 10 -> 5"):
        run_stages(tmp_path, sample_pipeline(tmp_path, rows=5), ["numbers"])
    run_stages(tmp_path, sample_pipeline(tmp_path, rows=5), ["numbers"], force=True)
    assert "rows: 5" in (tmp_path / "config.yaml").read_text()
    assert len(read_tables(tmp_path)["stages/numbers/make/part-000000.parquet"]) == 5


def test_forced_config_change_redoes_the_changed_stage_and_those_after_it(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path))
    numbers = (tmp_path / "stages/numbers/make/part-000000.parquet").stat().st_mtime_ns
    changed = sample_pipeline(tmp_path)
    changed["parity"] = {"drop_odd": False}
    report = run_stages(tmp_path, changed, force=True)
    assert report.stages["parity"]["counts"] == {"success": 40}
    assert (tmp_path / "stages/numbers/make/part-000000.parquet").stat().st_mtime_ns == numbers


def test_forced_change_of_an_unselected_upstream_stage_is_refused_and_nothing_is_deleted(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path))
    before = read_tables(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"redoes stages \['numbers', 'parity'\], but stage=parity leaves out \['numbers'\].*stage=numbers,parity",
    ):
        run_stages(tmp_path, sample_pipeline(tmp_path, rows=5), ["parity"], force=True)
    assert read_tables(tmp_path) == before


def test_progress_counts_batches_and_forgets_failed_attempts(tmp_path, monkeypatch):
    from curation.runner import local
    from curation.runner.progress import Progress

    seen = []

    class Recorder(Progress):
        def advance_to(self, n, total=None):
            if n != self.done:
                seen.append(n)
            super().advance_to(n, total)

    monkeypatch.setattr("curation.runner.driver.Progress", Recorder)
    data = sample_pipeline(tmp_path, fail_once_dir=str(tmp_path / "flaky"), partitions=2)
    data["runner"] = {"max_partition_retries": 1}
    local.run_stages(tmp_path, data, ["numbers"])
    # Batches of 4 rows move the bar within a partition; a failed attempt's rows are taken back.
    assert seen == [4, 0, 4, 8, 10, 14, 10, 14, 18, 20]


def test_table_folders_open_in_standard_readers(tmp_path):
    """pyarrow, pandas, DuckDB and Polars read a step folder as one dataset (side files live elsewhere)."""
    import duckdb
    import pandas as pd
    import pyarrow.parquet as pq

    run_stages(tmp_path, sample_pipeline(tmp_path))
    for folder, rows in (("numbers/make", 40), ("parity/mark", 40)):
        path = tmp_path / "stages" / folder
        assert pq.read_table(path).num_rows == rows
        assert len(pd.read_parquet(path)) == rows
        assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(rows,)]
        polars = pytest.importorskip("polars")
        assert polars.read_parquet(path).height == rows
    assert len(pd.read_parquet(tmp_path / "stages/parity/mark").query("status == 'odd'")) == 20
