"""Kill ``curate run`` mid-stage, rerun it: identical tables, nothing lost or duplicated."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.runner.helpers import read_tables, sample_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _curate(pipeline: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-m", "curation.cli", "run", f"pipeline={pipeline}", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _pipeline(tmp_path: Path, name: str) -> Path:
    data = sample_pipeline(tmp_path / name, partitions=6, rows=8, sleep_s=1.0)
    data["runner"] = {"max_workers": 1, "progress": False}
    data["ray"]["object_store_memory"] = 100_000_000
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ray", "local"])
def test_kill_mid_stage_then_rerun_gives_identical_tables(tmp_path, backend):
    pipeline = _pipeline(tmp_path, "killed")
    markers = tmp_path / "killed/stages/numbers/make.files"
    proc = _curate(pipeline, f"backend={backend}")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.stats.json"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its local Ray and its workers
    proc.wait()
    done = len(list(markers.glob("*.stats.json")))
    assert 2 <= done < 6, "the kill must land mid-stage"
    rerun = _curate(pipeline, f"backend={backend}")
    out = rerun.communicate(timeout=300)[0].decode()
    assert rerun.returncode == 0, out
    # A worker may still commit the partition it was writing as the cluster goes down.
    todo = int(re.search(r"numbers/make: (\d+) of 6 partitions to do", out).group(1))
    assert 1 <= todo <= 6 - done
    clean = _pipeline(tmp_path, "clean")
    ref = _curate(clean, "backend=local")
    assert ref.wait(timeout=300) == 0
    killed, expected = read_tables(tmp_path / "killed"), read_tables(tmp_path / "clean")
    assert killed == expected
    keys = [r["key"] for path, rows in killed.items() if "parity/mark" in path for r in rows]
    assert len(keys) == len(set(keys)) == 48
