"""Damage after completion is found by stat calls and redone, with what derives from it; nothing else."""

import json
import shutil

import pytest

from curation import cli
from curation.errors import ConfigError
from curation.runner.local import run_stages
from curation.runner.verify import format_checks, inspect_run
from tests.runner.helpers import read_tables, sample_pipeline

STAGES = ["numbers", "parity"]


def _finished(tmp_path, name):
    run_dir = tmp_path / name
    run_stages(run_dir, sample_pipeline(run_dir))
    return run_dir


def _snapshot(run_dir):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}


def _total(run_dir):
    return json.loads((run_dir / "stages/parity/total/total.json").read_text())


def test_truncated_table_partition_is_redone_with_what_derives_from_it(tmp_path):
    ref, run = _finished(tmp_path, "ref"), _finished(tmp_path, "run")
    table = run / "stages/numbers/make/part-000001.parquet"
    table.write_bytes(table.read_bytes()[:-7])
    others = {p: p.stat().st_mtime_ns for p in run.rglob("part-00000[023].*")}
    report = run_stages(run, sample_pipeline(run))
    assert report.repaired == ["numbers/make partition 1", "parity/mark partition 1", "parity/total"]
    assert read_tables(run) == read_tables(ref) and _total(run) == _total(ref)
    # Partitions that derive from nothing damaged are not touched.
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert not run_stages(run, sample_pipeline(run)).repaired


def test_deleted_output_of_a_global_step_is_redone(tmp_path):
    ref, run = _finished(tmp_path, "ref"), _finished(tmp_path, "run")
    (run / "stages/parity/total/total.json").unlink()
    tables = _snapshot(run / "stages/parity/mark")
    report = run_stages(run, sample_pipeline(run))
    assert report.repaired == ["parity/total"]
    assert _total(run) == _total(ref) and _snapshot(run / "stages/parity/mark") == tables


def test_lost_upstream_file_with_a_later_stage_pending_is_redone_not_read_as_missing(tmp_path):
    ref = _finished(tmp_path, "ref")
    run = tmp_path / "run"
    run_stages(run, sample_pipeline(run), ["numbers"])
    (run / "stages/numbers/make.files/part-000002.txt").unlink()
    # The stage that would read it alone is refused, naming the file, before anything changes.
    with pytest.raises(ConfigError, match=r"part-000002.txt is missing\).*select it too \(stage=numbers,parity\)"):
        run_stages(run, sample_pipeline(run), ["parity"])
    assert not (run / "stages/parity").exists()
    run_stages(run, sample_pipeline(run))
    assert read_tables(run) == read_tables(ref)
    assert (run / "stages/numbers/make.files/part-000002.txt").read_text().count("\n") == 10


def test_stage_marked_complete_with_a_partition_marker_gone_is_finished(tmp_path):
    ref, run = _finished(tmp_path, "ref"), _finished(tmp_path, "run")
    (run / "stages/numbers/make.files/part-000003.stats.json").unlink()
    report = run_stages(run, sample_pipeline(run))
    assert report.repaired == ["parity/mark partition 3", "parity/total"]
    assert read_tables(run) == read_tables(ref) and report.stages["numbers"]["partitions"] == 4


def test_verify_reports_damage_and_changes_nothing(tmp_path, capsys):
    run = _finished(tmp_path, "run")
    assert cli.main(["verify", f"run_dir={run}"]) == 0
    assert "numbers: complete, intact" in capsys.readouterr().out
    table = run / "stages/numbers/make/part-000001.parquet"
    table.write_bytes(table.read_bytes()[:-7])
    side = run / "stages/numbers/make.files/part-000003.txt"
    side.write_text(side.read_text().replace("0", "9"))  # same size: only a checksum sees it
    before = _snapshot(run)
    assert cli.main(["verify", f"run_dir={run}"]) == 1
    out = capsys.readouterr().out
    assert "numbers: DAMAGED: marked complete, a rerun redoes make partitions 1" in out
    assert "part-000001.parquet has" in out and "part-000003.txt" not in out
    assert "parity: DAMAGED: marked complete, a rerun redoes mark partitions 1, total" in out
    assert cli.main(["verify", f"run_dir={run}", "checksums=true"]) == 1
    assert "part-000003.txt: sha256 differs" in capsys.readouterr().out
    assert _snapshot(run) == before


def test_checks_of_a_run_in_progress(tmp_path):
    run = tmp_path / "run"
    run_stages(run, sample_pipeline(run), ["numbers"])
    checks = inspect_run(run, STAGES)
    assert [c.intact for c in checks] == [True, False]
    assert not any(c.needs_repair for c in checks)
    assert "parity: not started" in format_checks(run, checks, False)


def test_moved_or_copied_run_dir_resumes_with_no_work(tmp_path):
    first = _finished(tmp_path, "first")
    header = (first / "config.yaml").read_text().splitlines()[0]
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    copied = tmp_path / "copied"
    shutil.copytree(moved, copied)
    for run in (moved, copied):
        before = _snapshot(run / "stages")
        report = run_stages(run, sample_pipeline(run))
        assert not report.repaired and _snapshot(run / "stages") == before
        text = (run / "config.yaml").read_text()
        assert text.splitlines()[0] == header and "\nrun_dir: .\n" in text


def test_saved_config_of_a_moved_run_dir_is_a_pipeline_for_that_dir(tmp_path):
    from curation import config as cfg

    moved = tmp_path / "moved"
    shutil.move(_finished(tmp_path, "first"), moved)
    assert cfg.load(str(moved / "config.yaml")).run_dir == str(moved)


def test_repair_of_a_selected_stage_drops_what_unselected_stages_derived_from_it(tmp_path):
    ref, run = _finished(tmp_path, "ref"), _finished(tmp_path, "run")
    (run / "stages/numbers/make.files/part-000001.txt").unlink()
    run_stages(run, sample_pipeline(run), ["numbers"])
    mark = run / "stages/parity/mark.files"
    assert not (mark / "part-000001.stats.json").exists() and (mark / "part-000002.stats.json").exists()
    assert not (run / "stages/parity/_SUCCESS.json").exists()
    assert run_stages(run, sample_pipeline(run), ["parity"]).stages["parity"]["rows"] == 40
    assert read_tables(run) == read_tables(ref) and _total(run) == _total(ref)
