import torch

from curation.manifest import read_manifest
from curation.train.data.loader import StreamTracker, build_loader, resume_states
from curation.train.data.manifest_dataset import ReaderState
from tests.train.helpers import tiny_config


def test_tracker_keeps_the_last_consumed_state_per_reader():
    tracker = StreamTracker(rank=1, readers_per_rank=2, start={3: ReaderState(2, 5, 1, 0)})
    assert sorted(tracker.states) == [2, 3]
    tracker.update(torch.tensor([[2, 0, 7, 1, 0], [2, 0, 8, 1, 0]]))
    assert tracker.states[2] == ReaderState(0, 8, 1, 0)
    assert tracker.gather() == [[2, 0, 8, 1, 0], [3, 2, 5, 1, 0]]  # one process: this rank only
    assert tracker.counters() == {"corrupt": 2, "bad_shards": 0}


def test_resume_states_same_layout_continues_each_reader():
    saved = [[0, 1, 10, 0, 0], [1, 1, 12, 2, 1]]
    assert resume_states(saved, world_size=2, readers_per_rank=1) == {
        0: ReaderState(1, 10, 0, 0),
        1: ReaderState(1, 12, 2, 1),
    }


def test_resume_states_new_layout_starts_a_fresh_epoch():
    saved = [[0, 1, 10, 0, 0], [1, 2, 12, 2, 1]]
    states = resume_states(saved, world_size=1, readers_per_rank=3)
    assert states == {0: ReaderState(3, 0, 2, 1), 1: ReaderState(3), 2: ReaderState(3)}
    assert resume_states([], 1, 1) == {}


def test_loader_batches(shards_dir):
    cfg = tiny_config(optim={"batch_size": 4}, masking={"probability": 1.0})
    loader = build_loader(cfg, read_manifest(shards_dir / "manifest.json"), 0, 1, 32, 16, {})
    batch = next(iter(loader))
    assert batch["global_crops"].shape == (8, 3, 32, 32) and batch["global_crops"].dtype == torch.uint8
    assert batch["local_crops"].shape == (8, 3, 16, 16)
    assert batch["masks"].shape == (8, 16) and (batch["masks"].sum(1) > 0).all()  # probability 1
    positions = batch["state"][:, 2].tolist()  # corrupt samples leave gaps
    assert positions == sorted(set(positions)) and positions[0] >= 1
