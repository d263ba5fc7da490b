"""Rank / world / local-rank / device discovery for mpiexec, srun, torchrun, or a single process.

Only environment variables are read here (no shared-file rendezvous). Each launcher sets its own:
- torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
- SLURM srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE
- MPICH / Hydra (mpiexec from the PyPI mpich wheel): PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
- Open MPI: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch

from halopaint.errors import HalopaintError

_LAUNCHERS = (
    # name, rank, size, local rank, local size
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None),
)


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in the job."""

    launcher: str          # torchrun | openmpi | mpich | srun | single
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _slurm_local_size() -> int | None:
    """Tasks on this node from SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE ('4(x2),3' form)."""
    text = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
    node_id = os.environ.get("SLURM_NODEID")
    if not text or node_id is None:
        return None
    counts: list[int] = []
    for part in text.split(","):
        if "(x" in part:
            n, rep = part.rstrip(")").split("(x")
            counts.extend([int(n)] * int(rep))
        else:
            counts.append(int(part))
    node = int(node_id)
    return counts[node] if node < len(counts) else None


def discover(environ=None) -> LaunchInfo:
    """Read the launcher's environment; a bare process is rank 0 of 1."""
    env = os.environ if environ is None else environ
    for name, rank_v, size_v, lrank_v, lsize_v in _LAUNCHERS:
        if rank_v in env and size_v in env:
            try:
                rank, size = int(env[rank_v]), int(env[size_v])
                local_rank = int(env.get(lrank_v, rank))
                if lsize_v is not None and lsize_v in env:
                    local_size = int(env[lsize_v])
                elif name == "srun" and environ is None:
                    local_size = _slurm_local_size() or size
                else:
                    local_size = size
            except ValueError as exc:
                raise HalopaintError(f"launcher environment ({name}) is malformed: {exc}") from None
            if not (0 <= rank < size) or not (0 <= local_rank < local_size):
                raise HalopaintError(f"launcher environment ({name}) gives rank {rank} of {size}, "
                                     f"local {local_rank} of {local_size}")
            return LaunchInfo(name, rank, size, local_rank, local_size)
    return LaunchInfo("single", 0, 1, 0, 1)


def select_device(preference: str, local_rank: int) -> torch.device:
    """auto → cuda:(local_rank % n_gpus) when GPUs exist, else cpu; 'cpu'/'cuda'/'cuda:K' override."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HalopaintError("--device cuda requested but no CUDA device is available")
        if preference == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(preference)
    raise HalopaintError(f"unknown device '{preference}' (use auto, cpu, cuda or cuda:K)")


def cpu_threads_per_rank(local_world_size: int) -> int:
    """Share this node's cores (as allowed by affinity) evenly between its ranks; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def configure_threads(info: LaunchInfo, device: torch.device) -> int:
    """Set torch's intra-op threads for a CPU rank (respecting an explicit OMP_NUM_THREADS)."""
    if device.type != "cpu":
        return torch.get_num_threads()
    n = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else \
        cpu_threads_per_rank(info.local_world_size)
    torch.set_num_threads(n)
    return n


def mpi_local_placement(comm) -> tuple[int, int]:
    """(local rank, ranks on this node) from an MPI shared-memory split of `comm` (collective).

    Works under any MPI launcher, including ones whose environment variables `discover` does not know.
    """
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def agree_errors(comm, local_error: str | None, error_type: type) -> None:
    """Collective check: if any rank of `comm` (None: one process) has an error message, every rank
    raises the first one (lowest rank) as `error_type(message)` with `collective = True`, so the CLI
    prints it once; the message names its rank when the ranks disagree."""
    errors = [local_error] if comm is None else comm.allgather(local_error)
    for rank, msg in enumerate(errors):
        if msg is not None:
            several = comm is not None and comm.Get_size() > 1 and len(set(errors)) > 1
            exc = error_type((f"[rank {rank}] " if several else "") + msg)
            exc.collective = True
            raise exc


ABORT_GRACE_S = 1.0   # before MPI Abort: time for the launcher to forward this rank's last lines


def abort_job(comm, code: int) -> None:
    """Abort every rank of `comm` after flushing this rank's output and waiting ABORT_GRACE_S: Abort kills
    the job at once, and without the wait mpiexec could drop the error line this rank just printed."""
    import time
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(code)


@contextlib.contextmanager
def abort_on_unexpected(comm, command: str):
    """Around a distributed command's work: an unexpected exception (not a HalopaintError, ValueError or
    interruption) on one rank is printed with its traceback and aborts the whole job, so no other rank is
    left waiting in a collective; on one rank it propagates unchanged."""
    try:
        yield
    except (HalopaintError, ValueError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if comm is not None and comm.Get_size() > 1:
            import traceback
            traceback.print_exc()
            line = " ".join(f"{exc.__class__.__name__}: {exc}".split())
            print(f"halopaint {command}: error: [rank {comm.Get_rank()}] {line}", file=sys.stderr, flush=True)
            abort_job(comm, 1)
        raise
