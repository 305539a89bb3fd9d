"""Expected failures end in one ``curate:`` line, through the real entry point (subprocesses)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curation.exits import INTERRUPTED, describe, os_error
from tests.runner.helpers import sample_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _start(tmp_path: Path, backend: str) -> tuple[subprocess.Popen, Path]:
    data = sample_pipeline(tmp_path / "run", partitions=6, rows=8, sleep_s=1.0)
    data["runner"] = {"max_workers": 1, "progress": False}
    data["ray"].update(object_store_memory=100_000_000, dashboard=False)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(data))
    # RAY_ADDRESS=local: a Ray of its own, never one that another process on this machine started.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "local"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "curation", "run", f"pipeline={pipeline}", f"backend={backend}"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return proc, pipeline


def _interrupt_after_first_partition(tmp_path: Path, proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    markers = tmp_path / "run/stages/numbers/make.files"
    deadline = time.time() + 120
    while time.time() < deadline and not list(markers.glob("*.stats.json")) and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def _group_gone(pgid: int) -> bool:
    """No process of the run's session (driver, local Ray, workers) is left."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _rerun(pipeline: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "curation", "--quiet", "run", f"pipeline={pipeline}", "backend=local"],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_ctrl_c_is_one_line_and_the_run_resumes(tmp_path):
    proc, pipeline = _start(tmp_path, "local")
    status, err = _interrupt_after_first_partition(tmp_path, proc, signal.SIGINT)
    assert status == 130, err
    assert err.splitlines()[-1] == f"curate: {INTERRUPTED}" and "Traceback" not in err
    assert _group_gone(proc.pid)
    done = _rerun(pipeline)  # the run directory's lock was released
    assert done.returncode == 0, done.stderr.decode()
    assert "parity" in done.stdout.decode()


@pytest.mark.slow
def test_sigterm_on_ray_is_one_line_and_ray_is_released(tmp_path):
    proc, pipeline = _start(tmp_path, "ray")
    status, err = _interrupt_after_first_partition(tmp_path, proc, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == f"curate: {INTERRUPTED}" and "Traceback" not in err
    assert _group_gone(proc.pid)
    assert _rerun(pipeline).returncode == 0


def test_os_errors_name_the_path_and_the_fix():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/part-000001.tar")
    assert os_error(full) == (
        f"{os.strerror(errno.ENOSPC)}: /runs/x/part-000001.tar (free some space or point run_dir elsewhere)"
    )
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/run")
    line = f"{os.strerror(errno.EROFS)}: /mnt/ro/run (the file system is read-only; point run_dir at a writable one)"
    assert describe(read_only) == (line, 1)
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/urls.parquet")
    assert describe(denied)[0].endswith("/data/urls.parquet (check the path's permissions)")
    assert describe(ValueError("a bug")) == (None, 0)  # unexpected errors keep their traceback


def test_ray_errors_are_one_line():
    import ray.exceptions

    line, status = describe(ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready."))
    assert status == 1 and line.startswith("Ray error: GetTimeoutError: Get timed out")


def test_an_interruption_wrapped_by_a_library_is_still_one():
    from curation.exits import Interrupted

    try:
        try:
            raise Interrupted(signal.SIGTERM)
        except Interrupted as inner:
            raise SystemError("returned a result with an exception set") from inner
    except SystemError as outer:
        assert describe(outer) == (INTERRUPTED, 128 + signal.SIGTERM)
    assert describe(KeyboardInterrupt()) == (INTERRUPTED, 130)


def test_an_error_raised_inside_ray_is_one_line():
    import ray

    try:
        ray.remote(1)  # a misuse that Ray's own code refuses
    except Exception as err:  # noqa: BLE001 - whatever Ray raises
        line, status = describe(err)
    assert status == 1 and line.startswith("Ray error: ") and "@ray.remote" in line
    try:
        raise TypeError("ours")
    except TypeError as err:
        assert describe(err) == (None, 0)  # raised in our code: a bug, traceback kept


def test_ignored_signals_stay_ignored():
    from curation.exits import signals_raise

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    term = signal.getsignal(signal.SIGTERM)
    try:
        with signals_raise():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (term, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGHUP, old)
