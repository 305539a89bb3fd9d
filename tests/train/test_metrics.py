import json

import torch

from curation.train.metrics import MetricsLog


def test_records_average_the_window(tmp_path):
    metrics = MetricsLog(tmp_path, global_batch=8, is_main=True, device=torch.device("cpu"))
    schedule = {"lr": 0.1, "weight_decay": 0.04, "momentum": 0.99, "teacher_temp": 0.07, "last_layer_lr": 0.0}
    terms = {"dino": 1.0, "ibot": 2.0, "koleo": 0.5, "total": 3.5}
    counters = {"corrupt": 3, "bad_shards": 1}
    metrics.step(0, terms, schedule, {"backbone": 1.5}, counters, log_now=False)
    metrics.step(1, {k: v + 1 for k, v in terms.items()}, schedule, {"backbone": 1.5}, counters, log_now=True)
    with metrics.paused():
        pass
    metrics.record(1, {"knn_top1": 0.5})
    first, second = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert first["iteration"] == 1 and first["dino"] == 1.5 and first["total"] == 4.0
    assert first["corrupt"] == 3 and first["bad_shards"] == 1 and first["grad_norm_backbone"] == 1.5
    assert first["lr"] == 0.1 and first["images_per_s"] > 0 and first["memory_gib"] > 0
    assert second == {"iteration": 1, "knn_top1": 0.5}
