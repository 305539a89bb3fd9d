import subprocess
import sys

import pytest

from curation.errors import RunError
from curation.runner.rundir import RunLock


def test_second_runner_on_the_same_run_dir_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunError, match=r"in use by a running curate \(pid \d+\)"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released on exit
        pass


def test_lock_is_held_across_processes(tmp_path):
    code = (
        "import sys; from curation.runner.rundir import RunLock\n"
        f"with RunLock(r'{tmp_path}'):\n    print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match="in use"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.communicate("")
    with RunLock(tmp_path):
        pass
