"""Process-group setup for data-parallel training and the gradient all-reduce it needs.

`init_distributed(info, device)` joins the default torch.distributed group with `init_method="env://"`:
MASTER_ADDR / MASTER_PORT come from the launcher (torchrun), from rank 0 broadcasting its host and a
free port over MPI (mpiexec / srun with an MPI stack; mpi4py), or, under plain srun, from the SLURM
launch node and the job id. No shared-file rendezvous. gloo on CPU, nccl on CUDA.

`GradientSync` averages gradients over ranks with one flattened all-reduce. Training does not wrap the
nets in DistributedDataParallel: the gradient penalty's double backward runs on the plain modules, and
the averaged gradients are then exactly the gradients of the global mean loss (tested against one
process doing the same global work).
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from halopaint.errors import HalopaintError
from halopaint.launch import LaunchInfo


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _rendezvous_address(info: LaunchInfo) -> tuple[str, str]:
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    if info.launcher in ("mpich", "openmpi", "srun"):
        try:
            from mpi4py import MPI
            comm = MPI.COMM_WORLD
            if comm.Get_size() == info.world_size:
                addr = None
                if comm.Get_rank() == 0:
                    host = socket.gethostname()
                    try:
                        ip = socket.gethostbyname(host)
                    except OSError:
                        ip = "127.0.0.1"
                    addr = (ip, str(_free_port()))
                return tuple(comm.bcast(addr, root=0))
        except ImportError:
            pass
    if info.launcher == "srun" and os.environ.get("SLURM_LAUNCH_NODE_IPADDR"):
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
        return os.environ["SLURM_LAUNCH_NODE_IPADDR"], str(port)
    raise HalopaintError(f"cannot find a rendezvous address under {info.launcher}: set MASTER_ADDR and "
                         "MASTER_PORT, or install mpi4py")


def init_distributed(info: LaunchInfo, device: torch.device, timeout_s: float = 600.0) -> bool:
    """Join the default process group when running on several ranks; returns True if distributed."""
    if not info.is_distributed:
        return False
    if dist.is_initialized():
        return True
    addr, port = _rendezvous_address(info)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, port
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    import datetime
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=info.rank, world_size=info.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return True


class GradientSync:
    """Average parameter gradients over all ranks (no-op on one process).

    Every rank must call `average(params)` with the same parameters in the same order.
    """

    def __init__(self, distributed: bool):
        self.distributed = distributed and dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if self.distributed else 1

    def average(self, params, local_count: int = 1) -> None:
        """Gradients hold the sum over this process's `local_count` streams; make them the mean over all
        streams of all ranks (sum, all-reduce sum, one division: the same arithmetic however the streams
        are spread over ranks, up to the order of the sum)."""
        params = [p for p in params if p.requires_grad]
        total = local_count * self.world_size
        if not self.distributed:
            if total != 1:
                for p in params:
                    if p.grad is not None:
                        p.grad /= total
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= total
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def all_gather_object(self, obj):
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj, src: int = 0):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
