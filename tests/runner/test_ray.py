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
    ports = [n["MetricsExportPort"] for n in ray_session.nodes() if n["Alive"]]
    deadline = time.time() + 40
    text = ""
    while time.time() < deadline and 'stage="parity"' not in text:
        time.sleep(2)
        text = "".join(urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
                       for p in ports)
    lines = [line for line in text.splitlines() if line.startswith("ray_curation_samples_total")]
    assert any('stage="parity"' in line and 'status="odd"' in line for line in lines), lines
