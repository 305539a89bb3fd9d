"""The Ray backend on the shared local Ray: actor pools, retries, metrics."""

import time
import urllib.request

import pytest

from curation import config as cfg
from curation.errors import RunError
from curation.runner import run_pipeline
from curation.runner.local import run_stages
from tests.runner.helpers import read_tables, sample_pipeline


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


def test_ray_failure_is_reported_after_retries(ray_session, tmp_path):
    with pytest.raises(RunError, match="make partition 1: RuntimeError: partition 1 is configured to fail"):
        run_pipeline(_config(tmp_path, fail_partitions=[1]))
    assert len(list((tmp_path / "stages/numbers/make").glob("*.stats.json"))) == 3


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
    # and global steps alike; the per-status sample counters.
    charted = dashboard_metrics() - {"ray_curation_download_urls_per_second", "ray_curation_download_success_ratio"}

    def exported(lines: list[str]) -> bool:
        return (all(any(ln.startswith(name) and "SessionName=" in ln for ln in lines) for name in charted)
                and any(ln.startswith("ray_curation_step_done") and 'step="total"' in ln for ln in lines)
                and any(ln.startswith("ray_curation_samples_total") and 'stage="parity"' in ln
                        and 'status="odd"' in ln for ln in lines))

    ports = [n["MetricsExportPort"] for n in ray_session.nodes() if n["Alive"]]
    deadline, lines = time.time() + 60, []
    while time.time() < deadline and not exported(lines):
        time.sleep(2)
        lines = "".join(urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
                        for p in ports).splitlines()
    assert exported(lines), [ln for ln in lines if ln.startswith("ray_curation")]


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


def test_names_one_counter_per_run_no_failed_helper_task_and_global_progress(ray_session, tmp_path, monkeypatch):
    from curation.runner.progress import Progress

    moves = []

    class Recorder(Progress):
        def advance_to(self, n, total=None):
            moves.append((self.label, n, total))
            super().advance_to(n, total)

    monkeypatch.setattr("curation.runner.driver.Progress", Recorder)
    run_dir = tmp_path / "named"
    run_pipeline(_config(run_dir, fail_once_dir=str(tmp_path / "flaky")))
    # The global step's own reports reach the driver's progress, through the run's counter.
    assert ("parity/total", 2, 2) in moves
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
