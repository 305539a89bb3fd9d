import pytest

from curation.download.monitor import PartitionStats, make_metrics


def test_partition_summary():
    stats = PartitionStats(None)
    stats.add("success", 100, 40, 0)
    stats.add("success", 50, 20, 1)
    stats.add("failed_download:http_404", 0, 0, 0)
    stats.add("failed_download:http_500", 0, 0, 2)
    stats.report(["success"], 100, 0)  # no Ray metrics: a no-op
    summary = stats.summary()
    assert {
        k: summary[k] for k in ("urls", "success", "success_ratio", "bytes_downloaded", "bytes_stored", "retries")
    } == {"urls": 4, "success": 2, "success_ratio": 0.5, "bytes_downloaded": 150, "bytes_stored": 60, "retries": 3}
    assert summary["urls_per_s"] > 0 and summary["images_per_s"] > 0


@pytest.mark.slow  # starts the session's Ray when it is the first to need it
def test_metrics_inside_ray(ray_session):
    metrics = make_metrics()
    assert set(metrics) == {"urls", "bytes", "retries", "rate", "ratio"}
    stats = PartitionStats(metrics)
    stats.add("success", 10, 5, 1)
    stats.report(["success", "failed_download:http_404"], 10, 1)  # tags are accepted by Ray
