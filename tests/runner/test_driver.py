"""Everything checkable without Ray is checked before Ray starts, and reported at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.runner.local import run_stages
from curation.runner.rundir import RunLock
from tests.runner.helpers import sample_pipeline

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import sys

import ray

from curation import config as cfg
from curation.errors import ConfigError
from curation.runner import run_pipeline
from tests.runner.helpers import sample_pipeline

try:
    run_pipeline(cfg.validate(sample_pipeline(sys.argv[1], input_file=sys.argv[2])), ["numbers", "nosuch"])
except ConfigError as err:
    print(f"ConfigError: {err}")
print("ray initialised:", ray.is_initialized())
"""


def test_config_problems_are_reported_together_before_ray_starts(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    with RunLock(run_dir):  # another curate holds the run directory
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(run_dir), str(tmp_path / "absent.txt")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            check=False,
        )
    out = done.stdout
    assert "ConfigError: 3 problems; nothing was run:\n" in out, done.stderr
    assert "\n  stage: unknown stage 'nosuch'" in out
    assert f"numbers.input_file: '{tmp_path / 'absent.txt'}' does not exist" in out
    assert f"run_dir: {run_dir} is in use by a running curate (pid {os.getpid()})" in out
    assert out.strip().endswith("ray initialised: False")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


def test_run_dir_that_is_a_file_is_a_config_error(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match="run_dir: .*taken is not a directory"):
        run_stages(tmp_path / "taken" / "run", sample_pipeline(tmp_path / "taken" / "run"))
