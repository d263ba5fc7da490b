"""Typed configuration objects: the only place defaults live.

Each subcommand parses its arguments into one of these dataclasses and passes it down; nothing
below the CLI reads argparse namespaces or untyped dicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Cosmology:
    """Flat ΛCDM parameters (paper defaults: Planck-like, Kodi Ramanah et al. 2019)."""

    Omega_m: float = 0.315
    Omega_b: float = 0.049
    h: float = 0.68
    sigma8: float = 0.81
    n_s: float = 0.97

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Cosmology":
        return cls(**json.loads(text))


def default_mass_bin_edges() -> tuple[float, ...]:
    """Four equal log bins over 1e12–1e14 M☉/h (the paper's mass bins)."""
    return tuple(float(e) for e in np.logspace(12.0, 14.0, 5))


@dataclass(frozen=True)
class DensityRecipe:
    """How a `/density` field was made; a model refuses inputs made otherwise.

    method: "2lpt" (the only recipe the simulator produces).
    particles_per_voxel: 2LPT lattice has r·N particles per side.
    assignment: mass assignment scheme of the particles onto the N³ grid ("cic").
    """

    method: str = "2lpt"
    particles_per_voxel: int = 2
    assignment: str = "cic"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DensityRecipe":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class SimulateConfig:
    """`halopaint simulate`: one seed → 2LPT density (+ N-body halos unless lpt_only)."""

    grid: int = 64                      # N: output grid side
    box_size: float = 256.0             # [Mpc/h]
    seed: int = 1
    out: str = "sim.h5"
    lpt_only: bool = False
    lpt_particles_per_voxel: int = 2    # r: 2LPT lattice side = r·N
    particles_per_side: int | None = None  # P: N-body particles per side, default 4N
    pm_steps: int = 10                  # kick-drift-kick steps from a_init to a(z)
    pm_mesh_factor: int = 2             # force mesh side = factor · P
    a_initial: float = 0.02             # N-body start (2LPT ICs there)
    redshift: float = 0.0
    mass_bin_edges: tuple[float, ...] = field(default_factory=default_mass_bin_edges)
    fof_linking_length: float = 0.2     # in units of the mean interparticle separation
    fof_min_particles: int = 10
    cosmology: Cosmology = field(default_factory=Cosmology)
    redshifts: tuple[float, ...] = ()   # several output redshifts from one set of ICs; () → (redshift,)
    max_memory_bytes: int | None = None  # refuse a plan whose per-rank peak exceeds this
    dry_run: bool = False               # print the plan, allocate and write nothing
    plan_ranks: int | None = None       # --dry-run: plan for this many ranks (default: the launcher's)

    @property
    def n_particles_side(self) -> int:
        return self.particles_per_side if self.particles_per_side is not None else 4 * self.grid

    @property
    def output_redshifts(self) -> tuple[float, ...]:
        return tuple(self.redshifts) if self.redshifts else (self.redshift,)

    def output_path(self, z: float) -> str:
        """`out` with `{z}` replaced by the redshift written as `f"{z:g}"` (0.0 → 0, 0.5 → 0.5)."""
        return self.out.replace("{z}", f"{z:g}")

TRAIN_PATHS = ("auto", "eager", "fused")      # TrainConfig.train_path (halopaint.train.fast)


@dataclass(frozen=True)
class TrainConfig:
    """`halopaint train`: WGAN-GP (paper protocol) per mass bin, DDP-ready."""

    data: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    out: str = "model.pt"
    steps: int = 1000                   # generator steps
    mass_bins: tuple[int, ...] | None = None  # None = all
    patch: int = 50                     # halo patch side; density patch = patch + 2·ghost
    batch_size: int = 1
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 100
    n_critic: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    supervised_weight: float = 0.0      # optional Poisson-likelihood term (0 = paper protocol)
    adversarial_weight: float = 1.0     # weight of the WGAN generator loss; 0 = supervised only, no critic
    ema_decay: float = 0.0              # >0: the bundle holds an exponential moving average of the weights
    validation_fraction: float = 0.25   # held-out x-range of the box when no --validation file
    validate_every: int = 50
    validation_patches: int = 4         # fixed patches per bin for the train/validation estimates
    rotate: bool = True                 # random one of the 24 cube rotations per patch (paper)
    init_model: str | None = None       # warm start: generator weights from a bundle
    device: str = "auto"
    train_path: str = "auto"            # one of TRAIN_PATHS: eager (reference) | fused (halopaint.train.fast)
                                        # | auto: fused on CPU, eager elsewhere


@dataclass(frozen=True)
class PaintConfig:
    """`halopaint paint`: distributed slab painting of a density file with a model bundle."""

    model: str = "default"
    density: str = ""
    out: str = ""
    mass_bins: tuple[int, ...] | None = None  # None = all bins of the bundle
    max_memory_bytes: int = 4 * 1024**3
    device: str = "auto"
    kernels: str = "auto"
    resume: bool = False
    dry_run: bool = False
    allow_mismatch: bool = False
    tile: tuple[int, int, int] | None = None  # forced max tile (x, y, z) in voxels; None = from max_memory
    plan_grid: int | None = None        # --dry-run without a file: plan for an N³ grid
    plan_ranks: int | None = None       # --dry-run: plan for R ranks (default: the launcher's world size)


@dataclass(frozen=True)
class SpectraConfig:
    """`halopaint spectra`: Dask statistics of a painted field against a reference."""

    predicted: str = ""
    reference: str | None = None
    density: str | None = None
    out: str = "spectra"
    patches: int = 0
    patch_size: float | None = None     # [Mpc/h]; default: a quarter of the box
    scheduler: str | None = None
    mas: str = "none"                   # none | ngp | cic compensation
    bias_fit_kmax: float = 0.1          # [h/Mpc] 2LPT baseline bias fit range k ≤ kmax
    bias_fit_subtract_shot_noise: bool = True  # fit b² = Σ N_k (P_hh − V/N_halos) / Σ N_k P_mm
    chunk_planes: int = 16              # x-planes per Dask chunk (16: measured fastest at 512³, one thread)
    density_mas: str = "none"           # compensation of the 2LPT /density field (none | ngp | cic)
    bispectrum_configs: tuple[tuple[float, float], ...] = ((0.1, 0.2), (0.2, 0.3))  # (k1, k2) [h/Mpc]
    bispectrum_thetas: int = 16         # θ values uniformly in [0, π]
    bispectrum_sum_only: bool = False   # bispectra of the summed field only (default: also every mass bin)
    patch_seed: int = 0                 # seed of the random sub-cube corners
    spill_dir: str | None = None        # out-of-core FFT transpose through temporary files here
    output_format: str = "hdf5"         # hdf5 | json (statistics file)
    figures: bool = True                # write the PNG figures
    progress: bool = True


@dataclass(frozen=True)
class MultipolesConfig:
    """`halopaint spectra --multipoles`: real- and redshift-space P0, P2, P4 of halo catalogues."""

    predicted: str = ""
    reference: str | None = None
    out: str = "multipoles"
    los: str = "z"                      # line of sight: x | y | z (plane-parallel)
    grid: int | str | None = None       # CIC mesh side, a positive even integer (the CLI passes its text);
                                        # None = the prediction's grid (rounded up to even)
    band: tuple[float, float] = (0.05, 0.2)  # [h/Mpc] k range of the summary
    figures: bool = True


SNAPSHOT_BLENDS = ("linear", "nearest")   # how a light cone picks a snapshot per voxel (lightcone.blend)


@dataclass(frozen=True)
class LightconeConfig:
    """`halopaint lightcone`: HEALPix shells and a halo catalogue from painted boxes (MPI over x-slabs)."""

    inputs: tuple[str, ...] = ()        # painted or sampled field files (/halos), one per snapshot redshift
    densities: tuple[str, ...] = ()     # their density files (/velocity), same order; () = no velocities
    out: str = ""
    z_min: float = 0.0
    z_max: float = 0.1
    shells: int = 4                     # shells of equal comoving thickness in [χ(z_min), χ(z_max))
    z_edges: tuple[float, ...] | None = None  # explicit shell edges (overrides z_min, z_max, shells)
    nside: int = 64                     # HEALPix resolution (RING ordering)
    observer: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [Mpc/h] in the box frame
    subsample: int = 1                  # s³ sub-points per voxel for the maps
    mass_bins: tuple[int, ...] | None = None  # None = every bin of the inputs
    catalogue: bool = False             # also Poisson-sample a halo catalogue
    seed: int = 0                       # random streams: catalogue (seed, snapshot, x-plane, replica), blend (seed, x-plane, replica)
    planes_per_read: int = 8            # x-planes read from the input at a time
    figure: bool = True                 # PNG of the maps beside the output (<out stem>.png)
    max_replicas: int = 20000           # refuse plans that need more periodic replicas than this
    snapshot_tolerance: float = 0.25    # max |z_shell_middle − z_snapshot| accepted (linear: outside the snapshots)
    snapshot_blend: str = "linear"      # linear: dithered blend of adjacent snapshots per voxel; nearest: per shell
    velocity_dispersion: tuple[float, ...] | None = None  # per-bin Gaussian σ per component [km/s]
    fits: bool = False                  # also one HEALPix FITS file per shell (+ the catalogue as a FITS table)


@dataclass(frozen=True)
class DemoConfig:
    """`halopaint demo`: the README's main job on the embedded default."""

    out: str = "demo-out"
    ranks: int = 2
    model: str = "default"
    grid: int = 64                      # held-out N-body box: 64³ voxels of the model's size (4 Mpc/h)
    seed: int = 9001                    # never used for the shipped model's training
    lpt_grid: int = 128                 # larger 2LPT-only box (box side = lpt_grid · voxel size)
    lpt_seed: int = 9002
    kernels: str = "auto"
    sample_seed: int = 1                # `sample` of the painted held-out box
    multipole_grid: int | None = None   # RSD comparison mesh (None = the held-out grid)
    lightcone_z_max: float = 0.05       # light cone of the large painted box around its centre
    lightcone_shells: int = 4
    lightcone_nside: int = 64


def parse_bytes(text: str) -> int:
    """'4GiB' / '512MiB' / '1e9' → bytes."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
             "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "b": 1}
    s = text.strip().lower()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(unit):
            number = s[: -len(unit)].strip()
            break
    else:
        number, factor = s, 1
    try:
        value = float(number) * factor
    except ValueError:
        raise ValueError(f"cannot parse a memory size from {text!r} (use e.g. 4GiB)") from None
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(value)


def parse_mass_bins(text: str) -> tuple[int, ...] | None:
    """`--mass-bins`: 'all' → None; '2' → (2,); '0,1' → (0, 1); '1-3' → (1, 2, 3)."""
    text = text.strip().lower()
    if text == "all":
        return None
    bins: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                bins.extend(range(lo, hi + 1))
            else:
                bins.append(int(part))
    except ValueError:
        raise ValueError(f"--mass-bins: cannot parse {text!r} (use all, 2, 0,1 or 1-3)") from None
    if not bins:
        raise ValueError("--mass-bins is empty")
    return tuple(bins)
