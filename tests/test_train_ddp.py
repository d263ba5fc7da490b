"""Data-parallel training under mpiexec (gloo, CPU): every rank ends with identical parameters, equal to
one process doing the same global work (all ranks' patch streams, gradients averaged)."""

from __future__ import annotations

import pytest
import torch

from halopaint.config import TrainConfig
from halopaint.ddp import GradientSync, init_distributed
from halopaint.launch import discover
from halopaint.train import Trainer, TrainingData
from train_data import synthetic_pair


def _data() -> TrainingData:
    train = [synthetic_pair(24, 11, n_bins=2), synthetic_pair(24, 12, n_bins=2)]
    return TrainingData.from_arrays(train, [synthetic_pair(24, 13, n_bins=2)])


def _flat(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for bt in trainer.bins
                      for m in (bt.gen, bt.critic) for p in m.parameters()])


@pytest.mark.mpi(min_size=2)
def test_ddp_matches_one_process_doing_the_global_work():
    import torch.distributed as dist

    info = discover()
    assert info.world_size >= 2
    cfg = TrainConfig(patch=20, n_critic=2, seed=5, supervised_weight=0.5, validation_patches=1, lr=1e-3)
    data = _data()
    init_distributed(info, torch.device("cpu"))
    try:
        sync = GradientSync(True)
        ddp = Trainer(cfg, data, [info.rank], torch.device("cpu"), sync)
        start = _flat(ddp).clone()
        for _ in range(3):
            ddp.iteration()
        mine = _flat(ddp)
        everyone = sync.all_gather_object(mine)
    finally:
        dist.destroy_process_group()
    assert not torch.equal(mine, start)
    for other in everyone[1:]:
        assert torch.equal(other, everyone[0])          # all ranks hold identical parameters
    serial = Trainer(cfg, data, range(info.world_size), torch.device("cpu"), GradientSync(False))
    for _ in range(3):
        serial.iteration()
    torch.testing.assert_close(mine, _flat(serial), rtol=1e-4, atol=1e-6)
