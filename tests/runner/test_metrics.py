"""The Grafana dashboard shipped for the ``ray_curation_*`` metrics."""

import json
import re

from curation.runner.metrics import GAUGES, GRAFANA_DASHBOARD, install_grafana_dashboard

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
