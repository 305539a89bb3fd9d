"""`curate status` from the files of a run: done, running (with progress and ETA), pending."""

import threading
import time

from curation.runner.local import run_stages
from curation.runner.stepstats import PROGRESS_FILE, placement_text, progress_path, run_active
from curation.status import format_status
from tests.runner.helpers import sample_pipeline


def test_done_and_pending_steps(tmp_path):
    run_stages(tmp_path, sample_pipeline(tmp_path, partitions=2, rows=3), ["numbers"])
    out = format_status(tmp_path)
    assert ": not running" in out.splitlines()[0]
    assert "numbers: complete" in out and "parity: pending" in out
    assert "make       map    done      2/2 partitions  6 rows  took " in out and out.rstrip().endswith("pending")
    assert "total      global pending" in out
    run_stages(tmp_path, sample_pipeline(tmp_path, partitions=2, rows=3))
    out = format_status(tmp_path)
    assert "parity: complete" in out and "total      global done      took " in out
    assert "odd=2, success=4" in out
    assert not list(tmp_path.rglob(PROGRESS_FILE))  # progress files leave with their step


def test_a_running_step_shows_its_progress_and_eta(tmp_path):
    data = sample_pipeline(tmp_path, partitions=3, rows=4, sleep_s=1.0)
    run = threading.Thread(target=run_stages, args=(tmp_path, data))
    run.start()
    seen = ""
    deadline = time.monotonic() + 60
    while run.is_alive() and time.monotonic() < deadline and "ETA" not in seen:
        if (tmp_path / "config.yaml").exists():
            seen = format_status(tmp_path)
        time.sleep(0.1)
    run.join()
    assert ": running" in seen.splitlines()[0]
    assert "numbers: running" in seen
    live = next(line for line in seen.splitlines() if "make" in line)
    assert "map    running" in live and "samples" in live and "ETA" in live
    assert not run_active(tmp_path)


def test_placement_text():
    assert placement_text(None) == ""
    assert placement_text({"node_ip": "10.0.0.5", "num_cpus": 4.0, "num_gpus": 1.0}) == "10.0.0.5 (4 CPU, 1 GPU)"
    assert placement_text({"node_id": "abc", "num_cpus": 0}) == "abc"


def test_a_fresh_progress_file_means_running_a_stale_one_does_not(tmp_path):
    from curation.atomic import write_json

    run_stages(tmp_path, sample_pipeline(tmp_path, partitions=2, rows=3), ["numbers"])
    progress = progress_path(tmp_path / "stages/parity/mark", "map")
    progress.parent.mkdir(parents=True)
    state = {"done": 3, "total": 6, "unit": "sample", "rate": 1.5, "eta_s": 2.0, "started": time.time() - 2}
    write_json(progress, {**state, "updated": time.time()})  # e.g. a driver on another node
    out = format_status(tmp_path)
    assert ": running" in out.splitlines()[0] and "parity: running" in out
    assert "3/6 (50%) samples, 1.5/s" in out and "ETA 2s" in out
    write_json(progress, {**state, "updated": time.time() - 3600})  # left by a crash
    out = format_status(tmp_path)
    assert ": not running" in out.splitlines()[0] and "parity: pending" in out


def test_memory_and_placement_when_the_stats_record_them(tmp_path):
    from curation.atomic import read_json, write_json

    run_stages(tmp_path, sample_pipeline(tmp_path, partitions=2, rows=3), ["numbers"])
    for p, node in ((0, "10.0.0.5"), (1, "10.0.0.6")):
        marker = tmp_path / f"stages/numbers/make.files/part-00000{p}.stats.json"
        stats = read_json(marker)
        write_json(
            marker,
            {
                **stats,
                "peak_rss_bytes": (p + 1) * 2**30,
                "placement": {"node_ip": node, "num_cpus": 4.0, "num_gpus": 0.0},
            },
        )
    line = next(ln for ln in format_status(tmp_path).splitlines() if ln.strip().startswith("make"))
    assert "peak 2.0 GiB" in line and "on 10.0.0.5 (4 CPU), 10.0.0.6 (4 CPU)" in line
