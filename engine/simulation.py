"""`halopaint simulate` driver: validate → plan memory → run the simulator's physics → write field files.

One process, or R MPI ranks (mpiexec / srun) for `--lpt-only`. The physics is halopaint.sim.pipeline;
this module owns the checks, the plan (`--dry-run`, `--max-memory`), the progress log and the files.

Files (see docs/simulator.md, "File format additions"):
- one process: OUT written whole through a temporary name, `complete = True` last, atomic rename;
- R > 1 ranks: rank r writes its x-planes [g0, g1) of `/density` (g1−g0, N, N) and `/velocity`
  (3, g1−g0, N, N) to OUT.parts/rank-RRRR.h5; after every rank has finished its part, rank 0 writes the
  master OUT whose `/density` and `/velocity` are HDF5 virtual datasets over the parts
  (halopaint.fields.write_slab_master). Nothing is gathered but a few numbers per rank.
- a redshift list writes one such output per redshift (`{z}` in OUT), all from the same 2LPT fields.
Root attr `peak_rss_bytes`: each rank's peak resident memory when the file was written (one entry per rank).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from halopaint.config import DensityRecipe, SimulateConfig
from halopaint.errors import HalopaintError
from halopaint.launch import abort_job, agree_errors
from halopaint.log import get_logger
from halopaint.validation import interruption_point

log = get_logger(__name__)

MAX_LATTICE = 1 << 20                         # the white-noise hash's limit (halopaint.sim.ics)
RUNTIME_OVERHEAD_BYTES = 512 * 1024**2        # Python, numpy, scipy, numba, h5py, MPI per rank (≈ 0.4 GB)
PARTICLE_BYTES = 300                          # per particle of one CIC block: q, x, v, ψ copies, send/recv
FAIL_HOOK_ENV = "HALOPAINT_TEST_SIM_FAIL_RANK"  # test hook: this rank raises after the 2LPT stage
FFT_LAYER = "slab transpose (MPI Alltoallw of subarray datatypes) around scipy.fft 1D transforms"


class SimulateError(HalopaintError):
    """A simulation that cannot start or finish (bad input, impossible plan, unwritable output)."""


def _collective(message: str) -> SimulateError:
    exc = SimulateError(message)
    exc.collective = True
    return exc


def agree(comm, local_error: str | None) -> None:
    """Collective: if any rank has an error, every rank raises the first one (lowest rank)."""
    agree_errors(comm, local_error, SimulateError)


def density_recipe(config: SimulateConfig) -> DensityRecipe:
    """The one recipe for `/density` (see DensityRecipe)."""
    return DensityRecipe(method="2lpt", particles_per_voxel=config.lpt_particles_per_voxel, assignment="cic")


# ------------------------------------------------------------------------------------------ validation

def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SimulateError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def validate_config(config: SimulateConfig, ranks: int = 1) -> None:
    """Refuse an impossible configuration with a one-line HalopaintError (before any work)."""
    _positive_int(config.grid, "--grid", 8)
    if not (isinstance(config.box_size, (int, float)) and math.isfinite(config.box_size)
            and config.box_size > 0):
        raise SimulateError(f"--box must be a positive box side in Mpc/h, got {config.box_size!r}")
    _positive_int(config.seed, "--seed", 0)
    if config.seed >= 2**63:
        raise SimulateError(f"--seed must be < 2^63, got {config.seed}")
    r = _positive_int(config.lpt_particles_per_voxel, "--lpt-particles-per-voxel", 1)
    if r * config.grid > MAX_LATTICE:
        raise SimulateError(f"2LPT lattice {r * config.grid}³ exceeds the supported {MAX_LATTICE}³")
    _positive_int(ranks, "the rank count", 1)
    if ranks > config.grid:
        raise SimulateError(f"{ranks} ranks cannot split a grid of {config.grid} x-planes (each rank needs "
                            f"at least one); use at most {config.grid} ranks or a larger --grid")
    zs = config.output_redshifts
    for z in zs:
        if not (isinstance(z, (int, float)) and math.isfinite(z) and z >= 0):
            raise SimulateError(f"--redshift must be ≥ 0, got {z}")
    if len(set(zs)) != len(zs):
        raise SimulateError(f"--redshift lists a redshift twice: {list(zs)}")
    if len(zs) > 1:
        if "{z}" not in config.out:
            raise SimulateError(f"--redshift lists {len(zs)} redshifts but --out {config.out!r} has no '{{z}}' "
                                "to name one file per redshift (e.g. --out 'snap_z{z}.h5')")
        names = [config.output_path(z) for z in zs]
        if len(set(names)) != len(names):
            raise SimulateError(f"--redshift values {list(zs)} give the same file name twice: {names}")
        if not config.lpt_only:
            raise SimulateError("a --redshift list needs --lpt-only (the N-body run writes one redshift)")
    if config.max_memory_bytes is not None and config.max_memory_bytes <= 0:
        raise SimulateError(f"--max-memory must be positive, got {config.max_memory_bytes}")
    if config.lpt_only:
        _validate_cosmology(config)
        return
    p = _positive_int(config.n_particles_side, "--particles-per-side", 1)
    if p < config.grid:
        raise SimulateError(f"--particles-per-side ({p}) must be ≥ --grid ({config.grid})")
    _positive_int(config.pm_steps, "--pm-steps", 1)
    _positive_int(config.pm_mesh_factor, "pm_mesh_factor", 1)
    _positive_int(config.fof_min_particles, "fof_min_particles", 2)
    a_final = 1.0 / (1.0 + config.redshift)
    if not (0 < config.a_initial < a_final):
        raise SimulateError(f"a_initial ({config.a_initial}) must lie in (0, 1/(1+z) = {a_final:.4g})")
    if not (0 < config.fof_linking_length < 1):
        raise SimulateError(f"FoF linking length must be in (0, 1) mean separations, got "
                            f"{config.fof_linking_length}")
    edges = np.asarray(config.mass_bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise SimulateError(f"--mass-bin-edges needs at least two edges, got {list(config.mass_bin_edges)}")
    if not np.all(np.isfinite(edges)) or np.any(edges <= 0):
        raise SimulateError(f"--mass-bin-edges must be positive masses in M☉/h, got {edges.tolist()}")
    if np.any(np.diff(edges) <= 0):
        raise SimulateError(f"--mass-bin-edges must be strictly increasing, got {edges.tolist()}")
    _validate_cosmology(config)


def _validate_cosmology(config: SimulateConfig) -> None:
    c = config.cosmology
    values = asdict(c)
    if not all(math.isfinite(v) for v in values.values()):
        raise SimulateError(f"cosmology parameters must be finite, got {values}")
    if not (0 < c.Omega_b < c.Omega_m <= 1):
        raise SimulateError(f"need 0 < Omega_b < Omega_m ≤ 1, got Omega_b={c.Omega_b}, Omega_m={c.Omega_m}")
    if not (0 < c.h < 2) or c.sigma8 <= 0 or not (0 < c.n_s < 2):
        raise SimulateError(f"need 0 < h < 2, sigma8 > 0, 0 < n_s < 2; got h={c.h}, sigma8={c.sigma8}, "
                            f"n_s={c.n_s}")


# ------------------------------------------------------------------------------------------ memory plan

def lpt_plan_bytes(n_lat: int, grid: int, ranks: int) -> dict:
    """Estimated peak memory of one rank of the distributed 2LPT [bytes], by stage (the largest rank).

    C = one complex64 slab of the lattice spectrum, 8·⌈n/R⌉·n·(n/2+1) B. Stages: source (φ̂1, the
    transposed scratch, the real source: 2C + 4·⌈n/R⌉n² B), displacements (5C while the four x-slabs
    are made), CIC (4C + the float64 4-channel output buffer + the float32 outputs + ψ of one x-plane
    chunk + one block of ≤ 2^18 particles).
    """
    nh = n_lat // 2 + 1
    planes = -(-n_lat // ranks)
    c = 8 * planes * n_lat * nh
    real = 4 * planes * n_lat * n_lat
    g = -(-grid // ranks)
    out_buf = 8 * 4 * (g + 1) * grid * grid + 16 * g * grid * grid
    block = 1 << 18                                   # halopaint.sim.lpt.PARTICLE_BLOCK
    chunk = PARTICLE_BYTES * max(block, n_lat) + 24 * max(block, n_lat * n_lat)   # + ψ1, ψ2 of the planes
    stages = {"source": 2 * c + real + 3 * 8 * n_lat * n_lat, "displacements": 5 * c,
              "cic": 4 * c + out_buf + chunk}
    stages["peak"] = max(stages.values()) + RUNTIME_OVERHEAD_BYTES
    return stages


def nbody_peak_bytes(n_particles: int, n_mesh: int) -> int:
    """Rough peak memory of the (serial) N-body + FoF stage."""
    per_particle = 2 * 3 * 8 + 3 * 8 + 64          # pos, mom (f64), force, corner temporaries / FoF
    mesh = n_mesh**3 * (8 + 4 + 4 + 4 * 3) + n_mesh * n_mesh * (n_mesh // 2 + 1) * 8
    return n_particles**3 * per_particle + mesh + RUNTIME_OVERHEAD_BYTES


def peak_bytes(config: SimulateConfig, ranks: int) -> int:
    """Estimated peak memory per rank of the whole run [bytes]."""
    need = lpt_plan_bytes(config.lpt_particles_per_voxel * config.grid, config.grid, ranks)["peak"]
    if not config.lpt_only:
        p = config.n_particles_side
        need = max(need, nbody_peak_bytes(p, config.pm_mesh_factor * p))
    return need


def check_memory(config: SimulateConfig, ranks: int, ranks_per_node: int = 1) -> int:
    """Refuse (SimulateError) a run over --max-memory per rank or over this machine's RAM; → bytes/rank."""
    need = peak_bytes(config, ranks)
    if config.max_memory_bytes is not None and need > config.max_memory_bytes:
        raise SimulateError(f"this run needs about {need / 2**30:.2f} GiB per rank on {ranks} rank(s), over "
                            f"--max-memory {config.max_memory_bytes / 2**30:.2f} GiB; use more ranks or a "
                            "smaller --grid")
    if not config.dry_run:
        import psutil
        total = psutil.virtual_memory().total
        if need * ranks_per_node > total:
            raise SimulateError(f"this run needs about {need / 2**30:.1f} GiB per rank × {ranks_per_node} "
                                f"rank(s) here but the machine has {total / 2**30:.1f} GiB; use a smaller "
                                "--grid, --particles-per-side or --lpt-particles-per-voxel, or more nodes")
    return need


def output_files(config: SimulateConfig, ranks: int) -> list[str]:
    """Every file the run writes (masters first, then the parts directories)."""
    files = []
    for z in config.output_redshifts:
        out = config.output_path(z)
        files.append(out)
        if ranks > 1:
            from halopaint.fields import parts_dir
            files.append(f"{parts_dir(out)}/rank-0000.h5 … rank-{ranks - 1:04d}.h5")
    return files


def dry_run(config: SimulateConfig, ranks: int) -> str:
    """The plan: per-rank memory by stage and the files; computes only (allocates and writes nothing)."""
    validate_config(config, ranks)
    if not config.lpt_only and ranks > 1:
        raise SimulateError(_NBODY_MPI)
    need = check_memory(config, ranks)
    n_lat = config.lpt_particles_per_voxel * config.grid
    stages = lpt_plan_bytes(n_lat, config.grid, ranks)
    gib = 2**30
    n = config.grid
    lines = [f"plan: 2LPT {'only' if config.lpt_only else '+ N-body'}, grid N={n}, lattice {n_lat}³ "
             f"({n_lat**3 / 1e9:.3g} G particles), box {config.box_size:g} Mpc/h, {ranks} rank(s), "
             f"{len(config.output_redshifts)} redshift(s) {list(config.output_redshifts)}",
             f"FFT layer: {FFT_LAYER}",
             f"per-rank x-planes: lattice ≤ {-(-n_lat // ranks)}, output grid ≤ {-(-n // ranks)}",
             f"memory per rank ≈ {need / gib:.2f} GiB (stages: source {stages['source'] / gib:.2f}, "
             f"displacements {stages['displacements'] / gib:.2f}, CIC {stages['cic'] / gib:.2f} GiB, plus "
             f"{RUNTIME_OVERHEAD_BYTES / gib:.2f} GiB runtime)"
             + (f"; --max-memory {config.max_memory_bytes / gib:.2f} GiB" if config.max_memory_bytes else ""),
             f"total memory ≈ {need * ranks / gib:.1f} GiB over {ranks} rank(s); output "
             f"{16 * n**3 / gib:.2f} GiB per redshift (/density + /velocity float32)",
             "files:"]
    lines += [f"  {f}" for f in output_files(config, ranks)]
    return "\n".join(lines)


_NBODY_MPI = ("the full N-body run (simulate without --lpt-only) runs on one process only; run it without "
              "mpiexec/srun, or add --lpt-only for the distributed 2LPT density and velocity")


# ------------------------------------------------------------------------------------------------ run

def _comm():
    from halopaint.launch import discover
    if not discover().is_distributed:
        return None
    from mpi4py import MPI
    return MPI.COMM_WORLD


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _ranks_per_node(comm) -> int:
    if comm is None:
        return 1
    from mpi4py import MPI
    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()


class _Clock:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        log.info(f"[{time.perf_counter() - self.t0:7.1f}s] {message}")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _prepare_outputs(config: SimulateConfig, comm) -> None:
    """Check every output is writable; rank 0 removes stale masters/parts and makes the parts dirs."""
    from halopaint.fields import check_writable, parts_dir
    err = None
    try:
        for z in config.output_redshifts:
            out = config.output_path(z)
            check_writable(out)
            if comm is not None and comm.Get_rank() == 0:
                Path(out).unlink(missing_ok=True)
                pdir = parts_dir(out)
                if pdir.is_dir():
                    shutil.rmtree(pdir)
                try:
                    pdir.mkdir()
                except OSError as exc:
                    raise SimulateError(f"cannot create {pdir}: {exc.strerror}") from None
    except HalopaintError as exc:
        err = str(exc)
    agree(comm, err)


def simulate(config: SimulateConfig, comm=None, quiet: bool = False) -> list[str]:
    """Run the pipeline for `config` and write its file(s); → the paths written (one per redshift).

    Progress goes to the `halopaint.simulate` logger (the CLI's --quiet silences it; `quiet` is kept for
    callers of the old signature and does nothing).

    comm: an MPI communicator (default: COMM_WORLD under a multi-rank launcher, else one process).
    Collective under MPI: every rank must call it."""
    comm = _comm() if comm is None else comm
    if comm is not None and comm.Get_size() == 1:
        comm = None
    ranks = 1 if comm is None else comm.Get_size()
    err = None
    try:
        validate_config(config, ranks)
        if not config.lpt_only and ranks > 1:
            raise SimulateError(_NBODY_MPI)
        need = check_memory(config, ranks, _ranks_per_node(comm))
    except HalopaintError as exc:
        err = str(exc)
    agree(comm, err)
    _prepare_outputs(config, comm)
    if comm is None:
        return _run(config, None, need)
    try:
        return _run(config, comm, need)
    except (HalopaintError, KeyboardInterrupt):
        raise                     # the CLI reports it ("interrupted by SIG…") and aborts the other ranks
    except BaseException as exc:
        # an error on one rank (memory, I/O, a bug) would leave the others waiting in a collective
        # forever: report it and abort the whole job (no part or master is marked complete)
        log.error(f"rank {comm.Get_rank()}: {type(exc).__name__}: {exc}; aborting all ranks")
        abort_job(comm, 1)
        raise


def _run(config: SimulateConfig, comm, need: int) -> list[str]:
    ranks = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    clock = _Clock()
    clock(f"estimated peak memory {need / 2**30:.2f} GiB per rank on {ranks} rank(s)")

    from halopaint.sim.cosmology import LinearCosmology
    from halopaint.sim.pipeline import LptFields
    linear = LinearCosmology(config.cosmology)
    lpt = LptFields(config.seed, config.grid, config.box_size, config.lpt_particles_per_voxel, linear,
                    comm=comm, log=clock)
    hook = os.environ.get(FAIL_HOOK_ENV)
    if hook is not None and int(hook) == rank:
        raise RuntimeError(f"test hook {FAIL_HOOK_ENV}: rank {rank} fails after the 2LPT stage")
    written = []
    for i, z in enumerate(config.output_redshifts):
        interruption_point("simulate", i + 1, rank)       # test hook (HALOPAINT_TEST_SIGNAL), else nothing
        a = 1.0 / (1.0 + z)
        clock(f"z={z:g}: displacing {lpt.n_lat}³ particles, CIC onto {config.grid}³")
        fields = lpt.at(a)
        nbody = None if config.lpt_only else run_nbody(config, linear, log=clock)
        out = config.output_path(z)
        clock(f"writing {out}")
        attrs = _attrs(config, z, linear, ranks, nbody is not None)
        if comm is None:
            _write_serial(out, attrs, fields, nbody, config, linear, clock)
        else:
            _write_parallel(out, attrs, fields, config, comm, clock)
        mean = float(fields.density.sum(dtype=np.float64))
        if comm is not None:
            mean = comm.allreduce(mean)
        clock(f"done {out}: density mean {mean / config.grid**3:.6f}"
              + ("" if nbody is None else f", {nbody.catalog.n_part.size} halos"))
        written.append(out)
    return written


def run_nbody(config: SimulateConfig, linear, log=None):
    """The serial N-body stage of `config` → halopaint.sim.pipeline.NbodyResult."""
    from halopaint.sim.pipeline import nbody_halos
    return nbody_halos(config.seed, config.grid, config.box_size, linear, n_part=config.n_particles_side,
                       a_initial=config.a_initial, a_final=1.0 / (1.0 + config.redshift),
                       pm_steps=config.pm_steps, mesh_factor=config.pm_mesh_factor,
                       linking_length=config.fof_linking_length, min_particles=config.fof_min_particles, log=log)


def _attrs(config: SimulateConfig, z: float, linear, ranks: int, with_nbody: bool) -> dict:
    from halopaint.fields import standard_attrs
    p = config.n_particles_side
    extra = dict(density_recipe=density_recipe(config).to_json(), lpt_only=bool(config.lpt_only),
                 generator="halopaint.sim", ranks=int(ranks), velocity_unit="km/s",
                 velocity_recipe="mass-weighted CIC of the " + ("N-body" if with_nbody else "2LPT")
                 + " particles' peculiar velocities a dx/dt",
                 fft_layer=FFT_LAYER if ranks > 1 else "serial scipy.fft",
                 output_redshifts=np.asarray(config.output_redshifts, dtype=np.float64))
    if with_nbody:
        extra.update(particle_mass=float(linear.particle_mass(config.box_size, p)),
                     n_particles_side=int(p), pm_steps=int(config.pm_steps),
                     pm_mesh=int(config.pm_mesh_factor * p), a_initial=float(config.a_initial),
                     fof_linking_length=float(config.fof_linking_length),
                     fof_min_particles=int(config.fof_min_particles),
                     mass_assignment_halos="ngp")
    return standard_attrs(config.box_size, z, config.cosmology,
                          mass_bin_edges=config.mass_bin_edges if with_nbody else None,
                          seed=config.seed, **extra)


def _write_serial(out, attrs, fields, nbody, config, linear, clock) -> None:
    from halopaint.fields import atomic_h5
    from halopaint.sim.grids import ngp_counts
    attrs = dict(attrs, peak_rss_bytes=np.asarray([_peak_rss()], dtype=np.int64),
                 wall_time_s=float(clock.elapsed))
    with atomic_h5(out, attrs) as f:
        f.create_dataset("density", data=fields.density)
        # /velocity: of the N-body particles in a full run (issue 18), of the 2LPT particles otherwise;
        # a full run keeps the 2LPT one (matching /density) as /lpt_velocity
        f.create_dataset("velocity" if nbody is None else "lpt_velocity", data=fields.velocity)
        if nbody is not None:
            cat = nbody.catalog
            halos = ngp_counts(cat.pos, cat.mass, config.mass_bin_edges, config.grid, config.box_size)
            f.create_dataset("halos", data=halos)
            f.create_dataset("nbody_density", data=nbody.density)
            f.create_dataset("velocity", data=nbody.velocity)
            g = f.create_group("catalog")
            g.create_dataset("pos", data=cat.pos.astype(np.float32))
            g.create_dataset("mass", data=cat.mass.astype(np.float64))
            g.create_dataset("n_part", data=cat.n_part.astype(np.int32))
            g.create_dataset("vel", data=cat.vel.astype(np.float32))


def _write_parallel(out, attrs, fields, config, comm, clock) -> None:
    """Each rank its part; after all parts are complete rank 0 writes the master. Collective."""
    from halopaint.fields import atomic_h5, part_path, parts_dir, write_slab_master
    rank = comm.Get_rank()
    err = None
    try:
        with atomic_h5(part_path(out, rank), {"x0": fields.g0, "x1": fields.g1, "part_complete": True}) as f:
            f.create_dataset("density", data=fields.density)
            f.create_dataset("velocity", data=fields.velocity)
    except (HalopaintError, OSError) as exc:
        err = f"rank {rank}: cannot write {part_path(out, rank)}: {exc}"
    agree(comm, err)
    bounds = comm.gather((fields.g0, fields.g1), root=0)
    peaks = comm.gather(_peak_rss(), root=0)
    err = None
    if rank == 0:
        try:
            master = dict(attrs, peak_rss_bytes=np.asarray(peaks, dtype=np.int64),
                          wall_time_s=float(clock.elapsed), parts_dir=parts_dir(out).name,
                          layout="virtual datasets over per-rank x-slab part files")
            write_slab_master(out, config.grid, bounds, {"density": (), "velocity": (3,)}, master)
        except (HalopaintError, OSError) as exc:
            err = f"cannot write {out}: {exc}"
    agree(comm, comm.bcast(err, root=0))
