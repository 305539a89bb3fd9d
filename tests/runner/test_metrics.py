"""The ``ray_curation_*`` metrics: a step's own metrics reach the runner; the Grafana dashboard charts them."""

import json
import re

from curation import config as cfg
from curation.runner.metrics import GAUGES, GRAFANA_DASHBOARD, install_grafana_dashboard
from curation.runner.partition import run_map_partition
from curation.stages.registry import get_stage, stage_context
from tests.runner.helpers import sample_pipeline

EXPORTED = {
    "ray_curation_samples_total",
    "ray_curation_partitions_total",
    *(f"ray_curation_step_{name}" for name in GAUGES),
    "ray_curation_download_urls_per_second",
    "ray_curation_download_success_ratio",
}


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"ray_curation_\w+", e)}


def test_every_panel_charts_a_metric_the_pipeline_exports():
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert dashboard["uid"] == "curationPipeline" and len(dashboard["panels"]) >= 6
    assert dashboard_metrics() <= EXPORTED
    assert {"ray_curation_step_done", "ray_curation_step_eta_seconds"} <= dashboard_metrics()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_installed_where_rays_grafana_provisioning_reads(tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR", str(tmp_path))
    target = install_grafana_dashboard()
    assert target == tmp_path / "curation_grafana_dashboard.json"
    assert json.loads(target.read_text())["title"] == "Curation pipeline"
    monkeypatch.setenv("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR", str(tmp_path / "absent"))
    assert install_grafana_dashboard() is None


def test_a_steps_metrics_reach_the_runner_after_each_batch(tmp_path):
    config = cfg.validate(sample_pipeline(tmp_path, rows=10))
    [make] = get_stage("numbers").steps
    step, reported = make(stage_context(config, "numbers")), []
    run_map_partition(step, 0, on_metrics=reported.append)
    assert reported == [[("curation_numbers_rows", n, {})] for n in (4, 4, 2)]  # batches of 4
    assert {name for values in reported for name, _, _ in values} <= {m.name for m in step.metrics}
