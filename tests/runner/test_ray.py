"""The Ray backend on the shared local Ray: actor pools, retries, metrics."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from curation import config as cfg
from curation.errors import RunError
from curation.runner import run_pipeline
from curation.runner.counter import ProgressCounter
from curation.runner.local import run_stages
from tests.runner.helpers import read_tables, sample_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _config(run_dir, **numbers):
    data = sample_pipeline(run_dir, **numbers)
    data["runner"] = {"max_partition_retries": 1, "max_workers": 2, "progress": False}
    return cfg.validate(data)


def test_ray_run_with_two_workers_equals_in_process_run(ray_session, tmp_path):
    report = run_pipeline(_config(tmp_path / "ray", fail_once_dir=str(tmp_path / "flaky")))
    run_stages(tmp_path / "local", sample_pipeline(tmp_path / "local"))
    assert report.stages["parity"]["counts"] == {"odd": 20, "success": 20}
    assert read_tables(tmp_path / "ray") == read_tables(tmp_path / "local")
    # Every partition failed once and was retried on the pool.
    assert len(list((tmp_path / "flaky").iterdir())) == 4
    # A lost table partition is redone, with what derives from it.
    (tmp_path / "ray/stages/numbers/make/part-000002.parquet").unlink()
    report = run_pipeline(_config(tmp_path / "ray", fail_once_dir=str(tmp_path / "flaky")))
    assert report.repaired == ["numbers/make partition 2", "parity/mark partition 2", "parity/total"]
    assert read_tables(tmp_path / "ray") == read_tables(tmp_path / "local")


def test_workers_that_cannot_start_are_reported_after_retries(ray_session, tmp_path):
    with pytest.raises(RunError, match="make partition 0: no worker could start: .*numbers cannot set up"):
        run_pipeline(_config(tmp_path, fail_setup=True, partitions=2))
    assert not list((tmp_path / "stages/numbers/make").glob("*.stats.json"))


def test_ray_failure_is_reported_after_retries(ray_session, tmp_path):
    with pytest.raises(RunError, match="make partition 1: RuntimeError: partition 1 is configured to fail"):
        run_pipeline(_config(tmp_path, fail_partitions=[1]))
    assert len(list((tmp_path / "stages/numbers/make.files").glob("*.stats.json"))) == 3


@pytest.mark.slow
def test_actors_are_named_after_the_stage_and_counters_reach_the_metrics_endpoint(ray_session, tmp_path):
    import json

    run_pipeline(_config(tmp_path))
    # The dashboard answers without a token: local auth is off.
    url = ray_session._private.worker.global_worker.node.address_info["webui_url"]
    with urllib.request.urlopen(f"http://{url}/api/v0/actors?limit=1000", timeout=30) as response:
        actors = json.loads(response.read())["data"]["result"]["result"]
    names = {a["class_name"] for a in actors}
    assert {"NumbersMakeWorker", "ParityMarkWorker"} <= names
    assert any((a.get("name") or "").startswith("numbers/make #") for a in actors)  # the Name column
    from tests.runner.test_metrics import dashboard_metrics

    # Every metric the Grafana dashboard charts (download ones come from the download stage only),
    # with the SessionName label its session filter uses; the step gauges set by the driver for map
    # and global steps alike; the per-status sample counters; the sample stage's own counter.
    charted = dashboard_metrics() - {"ray_curation_download_urls_per_second", "ray_curation_download_success_ratio"}

    def exported(lines: list[str]) -> bool:
        return (
            all(any(ln.startswith(name) and "SessionName=" in ln for ln in lines) for name in charted)
            and any(ln.startswith("ray_curation_step_done") and 'step="total"' in ln for ln in lines)
            and any(
                ln.startswith("ray_curation_samples_total") and 'stage="parity"' in ln and 'status="odd"' in ln
                for ln in lines
            )
            # A step's own metrics, reported as data and exported by the runner.
            and any(
                ln.startswith("ray_curation_numbers_rows_total") and 'stage="numbers"' in ln and 'step="make"' in ln
                for ln in lines
            )
        )

    ports = [n["MetricsExportPort"] for n in ray_session.nodes() if n["Alive"]]
    deadline, lines = time.time() + 60, []
    while time.time() < deadline and not exported(lines):
        time.sleep(2)
        lines = "".join(
            urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode() for p in ports
        ).splitlines()
    assert exported(lines), [ln for ln in lines if ln.startswith("ray_curation")]


def test_workers_that_die_are_replaced_and_their_work_retried(ray_session, tmp_path):
    data = cfg.to_dict(_config(tmp_path / "ray", die_once_dir=str(tmp_path / "died")))
    data["parity"] = {"die_once_dir": str(tmp_path / "died")}
    run_pipeline(cfg.validate(data))
    run_stages(tmp_path / "local", sample_pipeline(tmp_path / "local"))
    # Every partition's first worker exited, and the global step's first task.
    assert len(list((tmp_path / "died").iterdir())) == 5
    assert read_tables(tmp_path / "ray") == read_tables(tmp_path / "local")


class DyingCounter(ProgressCounter):
    def in_flight(self, stage: str, step: str) -> int:
        os._exit(1)


def test_progress_counter_dying_does_not_stop_the_run(ray_session, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("curation.runner.counter.ProgressCounter", DyingCounter)
    report = run_pipeline(_config(tmp_path))
    assert report.stages["parity"]["counts"] == {"odd": 20, "success": 20}
    assert "progress counter lost" in caplog.text


OOM_RUN = """
import sys
from curation import config as cfg
from curation.errors import RunError
from curation.runner import run_pipeline
from tests.runner.test_ray import oom_pipeline

try:
    run_pipeline(cfg.validate(oom_pipeline(sys.argv[1])))
except RunError as err:
    print("RunError:", err)
"""


def oom_pipeline(run_dir):
    data = sample_pipeline(run_dir, partitions=2, rows=8, allocate_mb=64, sleep_s=1.0)
    data["runner"] = {"max_partition_retries": 1, "max_workers": 1, "progress": False}
    data["ray"] = {"num_cpus": 1, "dashboard": False, "object_store_memory": 100_000_000}
    return data


@pytest.mark.slow
def test_worker_killed_by_the_memory_monitor_is_retried_then_reported_and_resumable(tmp_path):
    # A Ray of its own whose memory monitor finds any node over its threshold:
    # every worker is killed for memory, while it starts or while it runs a partition.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_AUTH_MODE": "disabled",
        "RAY_memory_usage_threshold": "0.001",
        "RAY_memory_monitor_refresh_ms": "50",
    }
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", OOM_RUN, str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    message = next((line for line in done.stdout.splitlines() if line.startswith("RunError:")), done.stderr)
    assert "stage 'numbers' failed after retries: make partition 0: " in message
    assert "make partition 1: " in message and "killed by Ray's memory monitor" in message
    assert "likely fix: the worker ran out of memory: lower the stage's batch size" in message
    # Killed while starting (then another starts) or while running a partition (then it is retried).
    assert done.stderr.count("failed (attempt 1), retrying") + done.stderr.count("starting another") >= 1
    assert not list((run / "stages/numbers/make").glob("*.stats.json"))
    # Resumable: the same run with memory to spare finishes.
    report = run_stages(run, oom_pipeline(run))
    assert report.stages["parity"]["counts"] == {"odd": 8, "success": 8}


def test_unreachable_cluster_is_a_config_error_within_the_timeout(monkeypatch):
    from curation.errors import ConfigError
    from curation.runner.ray_init import cluster_address
    from tests.conftest import free_port

    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"ray.address: no Ray cluster answers at '{closed}' within 2 s"):
        cluster_address(closed, 2.0)
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at 'ray://{closed}'"):
        cluster_address(f"ray://{closed}", 2.0)
    monkeypatch.setenv("RAY_ADDRESS", closed)  # auto: the cluster RAY_ADDRESS names
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at '{closed}'"):
        cluster_address("auto", 2.0)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr("ray._private.services.find_bootstrap_address", lambda temp_dir: None)
    with pytest.raises(ConfigError, match="'auto' found no cluster"):
        cluster_address("auto", 2.0)


NODE_DEATH_RUN = """
import logging
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from curation import config as cfg
from curation.runner import run_pipeline
from tests.runner.helpers import sample_pipeline

logging.basicConfig(level=logging.WARNING, format="%(message)s")
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
doomed = cluster.add_node(num_cpus=1)  # with 1 CPU per node, one of the two workers runs here
ray.init(address=cluster.address, log_to_driver=False)
data = sample_pipeline(sys.argv[1], partitions=4, rows=8, sleep_s=2.0)
data["runner"] = {"max_partition_retries": 1, "max_workers": 2, "progress": False}


def kill_node_once_work_commits():
    markers = Path(sys.argv[1]) / "stages/numbers/make.files"
    while not list(markers.glob("*.stats.json")):
        time.sleep(0.05)
    cluster.remove_node(doomed)


threading.Thread(target=kill_node_once_work_commits, daemon=True).start()
report = run_pipeline(cfg.validate(data))
print("counts", report.stages["parity"]["counts"])
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_node_death_mid_step_is_retried_on_the_nodes_left(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", NODE_DEATH_RUN, str(tmp_path / "ray")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert "counts {'odd': 16, 'success': 16}" in done.stdout, done.stderr[-3000:]
    assert "failed (attempt 1), retrying" in done.stderr or "a worker failed to start" in done.stderr
    run_stages(tmp_path / "local", sample_pipeline(tmp_path / "local", partitions=4, rows=8, sleep_s=2.0))
    assert read_tables(tmp_path / "ray") == read_tables(tmp_path / "local")


def _state(ray_session, kind: str, **equal: str) -> list[dict]:
    """Rows of the dashboard's state API (what its Actors and Tasks pages show), filtered by ``key == value``."""
    import json
    import urllib.parse

    url = ray_session._private.worker.global_worker.node.address_info["webui_url"]
    query = [("limit", "10000"), ("detail", "1")]
    for key, value in equal.items():
        query += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
    with urllib.request.urlopen(f"http://{url}/api/v0/{kind}?{urllib.parse.urlencode(query)}", timeout=60) as r:
        return json.loads(r.read())["data"]["result"]["result"]


def test_names_one_counter_per_run_no_failed_helper_task_and_global_progress(ray_session, tmp_path, progress_moves):
    run_dir = tmp_path / "named"
    run_pipeline(_config(run_dir, fail_once_dir=str(tmp_path / "flaky")))
    # The global step's own reports reach the driver's progress, through the run's counter.
    assert ("parity/total", 2, 2) in progress_moves
    actors = _state(ray_session, "actors")
    names = sorted(a.get("name") or "" for a in actors if f"[{run_dir.name}:" in (a.get("name") or ""))
    assert sum(n.startswith("progress [") for n in names) == 1
    assert any(n.startswith("numbers/make #") for n in names) and any(n.startswith("parity/mark #") for n in names)
    assert all(a["class_name"] != "RowCounter" for a in actors)
    deadline, tasks = time.time() + 60, []
    # Task events reach the dashboard a moment after the tasks end.
    while time.time() < deadline and not any(t["state"] == "FINISHED" for t in tasks):
        time.sleep(1)
        tasks = _state(ray_session, "tasks", name="parity/total")
    assert any(t["state"] == "FINISHED" for t in tasks), tasks
    assert _state(ray_session, "tasks", name="numbers/make/part-000000")
    # Partitions failed on purpose (and were retried), but no helper call failed with them.
    counter = next(a["actor_id"] for a in actors if (a.get("name") or "").startswith(f"progress [{run_dir.name}:"))
    assert [t for t in _state(ray_session, "tasks", actor_id=counter) if t["state"] == "FAILED"] == []


def test_a_successful_run_shows_no_failed_task(ray_session, tmp_path):
    run_dir = tmp_path / "clean"
    run_pipeline(_config(run_dir))
    ours = {a["actor_id"] for a in _state(ray_session, "actors") if f"[{run_dir.name}:" in (a.get("name") or "")}
    assert len(ours) >= 3  # the counter and the workers of both map steps
    deadline, tasks = time.time() + 60, []
    while time.time() < deadline and not any(t["name"].startswith("ProgressCounter.") for t in tasks):
        time.sleep(1)
        # Filtered by the dashboard: the shared session holds more tasks than one listing returns.
        tasks = [t for actor in ours for t in _state(ray_session, "tasks", actor_id=actor)]
    assert tasks, "no task event of this run reached the dashboard"
    assert [(t["name"], t["state"], t.get("error_message")) for t in tasks if t["state"] == "FAILED"] == []
