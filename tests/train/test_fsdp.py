"""Two gloo ranks with FSDP2 against one process, and resumption across world sizes."""

import json

import numpy as np
import pytest
import torch

from curation.train import checkpoint as ckpt
from curation.train.fsdp import close_distributed, init_distributed
from curation.train.losses.centering import sinkhorn_knopp
from tests.train.dist_workers import SAVE_AT, STEPS, equivalence_config, fsdp_worker, run_steps, setup
from tests.train.helpers import spawn, teacher_params, tiny_config


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, shards_dir):
    out = tmp_path_factory.mktemp("fsdp")
    spawn(fsdp_worker, 2, str(out), str(shards_dir / "manifest.json"))
    return out


@pytest.fixture()
def one_process():
    ctx = init_distributed("cpu")
    yield ctx
    close_distributed(ctx)


def _assert_losses_close(got, expected):
    for a, b in zip(got, expected, strict=False):
        for name in ("dino", "ibot", "total", "dino_local", "dino_global"):
            assert a[name] == pytest.approx(b[name], rel=2e-4, abs=2e-5), name


@pytest.mark.slow
def test_sinkhorn_across_uneven_ranks(two_rank_run):
    logits = torch.randn(12, 10, generator=torch.Generator().manual_seed(0))
    expected = sinkhorn_knopp(logits, 0.1).numpy()
    np.testing.assert_allclose(np.load(two_rank_run / "sinkhorn.npy"), expected, atol=1e-6)


@pytest.mark.slow
def test_two_ranks_match_one_process(two_rank_run, one_process):
    cfg = equivalence_config(batch_size=8)
    meta, optimizer, schedules = setup(cfg, world=1)
    reference = run_steps(meta, optimizer, schedules, range(STEPS), 0, 1)
    two_ranks = json.loads((two_rank_run / "losses.json").read_text())
    _assert_losses_close(two_ranks, reference)
    assert reference[-1]["total"] < reference[0]["total"]  # it learns, so the comparison is not vacuous
    saved = np.load(two_rank_run / "teacher.npz")
    for name, value in teacher_params(meta).items():
        np.testing.assert_allclose(saved[name], value, atol=2e-5, err_msg=name)


@pytest.mark.slow
def test_resume_two_rank_checkpoint_in_one_process(two_rank_run, one_process):
    cfg = equivalence_config(batch_size=8)
    meta, optimizer, schedules = setup(cfg, world=1)
    state = ckpt.load_checkpoint(two_rank_run / "ckpt" / f"step-{SAVE_AT:06d}", meta, optimizer)
    assert state["iteration"] == SAVE_AT and state["world_size"] == 2
    resumed = run_steps(meta, optimizer, schedules, range(SAVE_AT, STEPS), 0, 1)
    two_ranks = json.loads((two_rank_run / "losses.json").read_text())
    _assert_losses_close(resumed, two_ranks[SAVE_AT:])


@pytest.mark.slow
def test_loop_resumes_two_rank_run_with_one_rank(two_rank_run, shards_dir):
    from curation.train.loop import train

    loop_dir = two_rank_run / "loop"
    first = [json.loads(line) for line in (loop_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in first] == [0, 1, 2, 3]
    assert [p.name for p in ckpt.list_checkpoints(loop_dir / "checkpoints")] == ["step-000002", "step-000004"]
    cfg = tiny_config(
        manifest=str(shards_dir / "manifest.json"),
        output_dir=str(loop_dir),
        optim={"iterations": 6, "batch_size": 8},
        checkpoint={"every": 2},
    )
    train(cfg)
    records = [json.loads(line) for line in (loop_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records[len(first) :] if "total" in r]
    assert [r["iteration"] for r in resumed] == [4, 5]
    assert all(np.isfinite(r["total"]) for r in resumed)
    # Same weights, different data order: the loss carries on from where it was.
    assert resumed[0]["total"] == pytest.approx(first[-1]["total"], rel=0.25)
    assert (loop_dir / "backbone.safetensors").is_file()
