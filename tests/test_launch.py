"""Launcher discovery: torchrun, srun, mpiexec (MPICH / Open MPI) and a bare process."""

import pytest
import torch

from halopaint.errors import HalopaintError
from halopaint.launch import cpu_threads_per_rank, discover, select_device


def test_single_process_is_rank_zero_of_one():
    info = discover({})
    assert (info.launcher, info.rank, info.world_size, info.local_rank, info.local_world_size) == \
        ("single", 0, 1, 0, 1)
    assert not info.is_distributed


@pytest.mark.parametrize("env, expected", [
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, ("torchrun", 3, 8, 1, 2)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, ("mpich", 1, 2, 1, 2)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "6", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, ("openmpi", 5, 6, 1, 2)),
    ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3"}, ("srun", 7, 16, 3, 16)),
])
def test_launchers(env, expected):
    info = discover(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank, info.local_world_size) == expected
    assert info.is_distributed


def test_torchrun_wins_over_the_slurm_allocation_it_runs_in():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0",
           "RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert discover(env).launcher == "torchrun"


@pytest.mark.parametrize("env", [
    {"RANK": "4", "WORLD_SIZE": "4"},
    {"PMI_RANK": "x", "PMI_SIZE": "2"},
])
def test_malformed_environment_is_a_clear_error(env):
    with pytest.raises(HalopaintError):
        discover(env)


def test_device_selection_on_cpu_machine():
    assert select_device("cpu", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto", 1) == torch.device("cpu")
        with pytest.raises(HalopaintError, match="no CUDA"):
            select_device("cuda", 0)
    with pytest.raises(HalopaintError, match="unknown device"):
        select_device("tpu", 0)


def test_cores_are_shared_between_local_ranks():
    total = cpu_threads_per_rank(1)
    assert total >= 1
    assert cpu_threads_per_rank(2 * total) == 1
