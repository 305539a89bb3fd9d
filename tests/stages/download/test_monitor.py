import pytest

from curation.stages.download.monitor import BYTES, RATE, RATIO, RETRIES, URLS, PartitionStats


def test_partition_summary():
    stats = PartitionStats()
    stats.add("success", 100, 40, 0)
    stats.add("success", 50, 20, 1)
    stats.add("failed_download:http_404", 0, 0, 0)
    stats.add("failed_download:http_500", 0, 0, 2)
    summary = stats.summary()
    assert {
        k: summary[k] for k in ("urls", "success", "success_ratio", "bytes_downloaded", "bytes_stored", "retries")
    } == {"urls": 4, "success": 2, "success_ratio": 0.5, "bytes_downloaded": 150, "bytes_stored": 60, "retries": 3}
    assert summary["urls_per_s"] > 0 and summary["images_per_s"] > 0


def test_metrics_are_the_increments_since_the_last_report():
    stats = PartitionStats()
    stats.add("success", 100, 40, 0)
    stats.add("failed_download:http_404", 0, 0, 2)
    first = {(name, tuple(tags.items())): value for name, value, tags in stats.metrics()}
    assert first[(URLS, (("status", "success"),))] == 1
    assert first[(URLS, (("status", "failed_download"),))] == 1
    assert first[(BYTES, ())] == 100 and first[(RETRIES, ())] == 2
    assert first[(RATIO, ())] == 0.5 and first[(RATE, ())] > 0
    stats.add("failed_download:http_500", 0, 0, 0)
    second = {(name, tuple(tags.items())): value for name, value, tags in stats.metrics()}
    # Only what changed is counted again (status families: bounded tag values); the gauges are always set.
    assert {k: v for k, v in second.items() if k[0] not in (RATE, RATIO)} == {
        (URLS, (("status", "failed_download"),)): 1
    }
    assert second[(RATIO, ())] == pytest.approx(1 / 3, abs=1e-4)


def test_the_fetch_step_declares_every_metric_it_reports():
    from curation.stages.download.stage import FetchStep

    stats = PartitionStats()
    stats.add("success", 1, 1, 1)
    assert {name for name, _, _ in stats.metrics()} == {m.name for m in FetchStep.metrics}
    assert {m.name for m in FetchStep.metrics if m.gauge} == {RATE, RATIO}


@pytest.mark.slow  # starts the session's Ray when it is the first to need it
def test_the_runner_exports_them_inside_ray(ray_session):
    from curation.runner.metrics import report_step_metrics
    from curation.stages.download.stage import FetchStep

    stats = PartitionStats()
    stats.add("success", 10, 5, 1)
    stats.add("failed_download:http_404", 0, 0, 0)
    report_step_metrics("download", "fetch", FetchStep.metrics, stats.metrics())  # tags are accepted by Ray
