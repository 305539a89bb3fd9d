import math

import numpy as np
import pytest

from curation.train.schedules import (
    ScheduleSpec,
    build_run_schedules,
    build_schedules,
    cosine_schedule,
    sqrt_scaled_lr,
)


def test_cosine_schedule_freeze_warmup_cosine():
    values = cosine_schedule(1.0, 0.0, 10, warmup=2, freeze=3)
    cos = [0.5 * (1 + math.cos(math.pi * i / 5)) for i in range(5)]
    np.testing.assert_allclose(values, [0, 0, 0, 0, 1] + cos)


def test_sqrt_scaling():
    assert sqrt_scaled_lr(4e-3, 2048) == pytest.approx(4e-3 * math.sqrt(2))
    assert sqrt_scaled_lr(2e-4, 3072) == pytest.approx(3.464e-4, rel=1e-3)  # the paper's 3.5e-4


SPEC = ScheduleSpec(
    iterations=100,
    lr=1.0,
    min_lr=0.0,
    warmup=10,
    weight_decay=0.04,
    weight_decay_end=0.4,
    momentum=0.994,
    momentum_end=1.0,
    teacher_temp=0.07,
    teacher_temp_start=0.04,
    teacher_temp_warmup=3,
    freeze_last_layer=5,
)


def test_build_schedules():
    s = build_schedules(SPEC)
    assert len(s) == 100
    np.testing.assert_allclose(s.teacher_temp[:4], [0.04, 0.055, 0.07, 0.07])
    assert s.lr[0] == 0.0 and s.lr[9] == 1.0 and s.lr[10] == 1.0
    assert (s.last_layer_lr[:5] == 0).all() and s.last_layer_lr[14] == 1.0
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.4, rel=1e-3)
    assert s.momentum[0] == pytest.approx(0.994) and s.momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(s.momentum) >= 0)
    assert s.at(10_000)["lr"] == s.lr[-1]


def test_highres_phase_is_compressed():
    s = build_run_schedules(SPEC, highres_iterations=20, highres_lr_scale=0.1)
    assert len(s) == 120
    high = s.lr[100:]
    np.testing.assert_allclose(high[:2], [0.0, 0.1])  # warmup of 10 * 20/100 = 2
    assert high.max() == pytest.approx(0.1)
    # freeze 5 * 0.2 = 1 iteration, then the 2-iteration warmup from 0
    np.testing.assert_allclose(s.last_layer_lr[100:103], [0.0, 0.0, 0.1])
    assert s.momentum[100] == pytest.approx(0.994)
