"""The paper's networks (Kodi Ramanah, Charnock & Lavaux 2019) and model bundles.

- `Generator()`: two residual Inception blocks + four 1×1×1 convs + 1×1×1 output with ReLU,
  32,081 parameters, input side n+8 → output side n (ghost width 4). Its forward *is*
  `halopaint.kernels.reference.generator_forward`, so the weights every kernel reads are this module's state_dict.
- `Critic()`: valid convs 7³/2 (1→8), 5³ (8→16), 3³/2 (16→32), 1³ (32→64), leaky ReLU 0.1, linear → 1.
- `ModelBundle`: one generator per mass bin + metadata, saved as one torch file loaded with
  `weights_only=True` (no code from the file is ever executed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from halopaint.config import Cosmology, DensityRecipe
from halopaint.errors import HalopaintError
from halopaint.fields import atomic_path
from halopaint.kernels.reference import GeneratorSpec, generator_forward
from halopaint.validation import ValidationError, check_bundle_metadata

BUNDLE_FORMAT = "halopaint-model-bundle"
BUNDLE_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).parent / "data" / "default_model.pt"
# The models shipped in the package, by the redshift they were trained at (`--model default` takes the one
# nearest the input's redshift; docs/model-card.md). A file absent from the package is simply not offered.
SHIPPED_MODELS = {0.0: DEFAULT_MODEL_PATH,
                  0.5: DEFAULT_MODEL_PATH.with_name("default_model_z0.5.pt"),
                  1.0: DEFAULT_MODEL_PATH.with_name("default_model_z1.0.pt")}


class Generator(nn.Module):
    """Paper generator. `Generator()` is exactly the published architecture.

    forward: (B, C_in, n+2g, n+2g, n+2g) → (B, 1, n, n, n), g = self.ghost_width.
    """

    def __init__(self, spec: GeneratorSpec | None = None):
        super().__init__()
        self.spec = spec or GeneratorSpec()
        s = self.spec
        blocks = []
        for i in range(s.n_blocks):
            c_in = s.in_channels if i == 0 else s.block_out_channels
            blocks.append(nn.ModuleDict({
                "a_reduce": nn.Conv3d(c_in, s.filters, 1),
                "a_conv": nn.Conv3d(s.filters, s.filters, s.big_kernel),
                "b_reduce": nn.Conv3d(c_in, s.filters, 1),
                "b_conv": nn.Conv3d(s.filters, s.filters, s.small_kernel),
                "c_reduce": nn.Conv3d(c_in, s.filters, 1),
            }))
        self.blocks = nn.ModuleList(blocks)
        widths = [s.block_out_channels, *s.tail_widths]
        self.tail = nn.ModuleList(nn.Conv3d(widths[j], widths[j + 1], 1) for j in range(len(s.tail_widths)))
        self.out = nn.Conv3d(widths[-1], 1, 1)

    @property
    def ghost_width(self) -> int:
        return self.spec.ghost_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return generator_forward(dict(self.named_parameters()), x, self.spec)


class Critic(nn.Module):
    """Paper critic for a (B, 1, patch, patch, patch) halo patch → (B, 1) Wasserstein score."""

    def __init__(self, patch: int = 50, slope: float = 0.1):
        super().__init__()
        self.patch = patch
        self.slope = slope
        self.convs = nn.ModuleList([
            nn.Conv3d(1, 8, 7, stride=2),
            nn.Conv3d(8, 16, 5),
            nn.Conv3d(16, 32, 3, stride=2),
            nn.Conv3d(32, 64, 1),
        ])
        side = patch
        for conv in self.convs:
            side = (side - conv.kernel_size[0]) // conv.stride[0] + 1
        if side < 1:
            raise ValueError(f"patch {patch} is too small for the critic")
        self.feature_side = side
        self.linear = nn.Linear(64 * side**3, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), self.slope)
        return self.linear(h.flatten(1))


@dataclass(frozen=True)
class InputNormalisation:
    """Map from the density file's ρ/ρ̄ to the generator's input: x = (ρ/ρ̄ − offset) · scale."""

    offset: float = 0.0
    scale: float = 1.0

    def apply(self, density):
        return (density - self.offset) * self.scale


def mean_map_values(mu: np.ndarray, knots, values) -> np.ndarray:
    """The piecewise-linear mean map through (knots, values): proportional to μ below the first knot, flat
    above the last. mu: any shape → float64 of its shape."""
    xs, ys = np.asarray(knots, np.float64), np.asarray(values, np.float64)
    mu = np.asarray(mu, np.float64)
    return np.where(mu < xs[0], mu * (ys[0] / xs[0]), np.interp(mu, xs, ys))


@dataclass(frozen=True)
class CountModel:
    """Per-mass-bin law of integer halo counts n around the painted mean μ (`halopaint sample`).

    Var[n | μ] = μ + α_b(μ)·μ² in mass bin b, i.e. E[n(n−1) | μ] = (1 + α_b(μ))·μ²: α < 0 sub-Poisson
    (binomial family), α = 0 Poisson, α > 0 negative binomial. α_b(μ) is piecewise constant in μ:
    alpha[b][j] holds on [mu_breaks[b][j−1], mu_breaks[b][j]) with mu_breaks[b] the len(alpha[b]) − 1
    increasing interior breaks [counts per voxel] (the outer ranges reach 0 and ∞).

    mean_mu[b], mean_n[b] (optional; None: E[n | μ] = μ in every bin, as in older bundles; two empty lists:
    E[n | μ] = μ in bin b alone): the knots of a monotone mean map m_b(μ) = E[n | μ], learned on training
    boxes (halopaint.sample.fit_mean_map: isotonic regression of the true counts on the painted means).
    With it the law is about m instead of μ: E[n | μ] = m_b(μ), Var[n | μ] = m + α_b(μ)·m² (α's ranges
    stay indexed by the painted μ). m_b is linear between the knots
    (mean_mu[b] increasing, mean_n[b] non-decreasing, both > 0), proportional to μ below the first knot
    (m(0) = 0) and flat above the last. The painted field itself is unchanged: it is the generator's output,
    whose statistics match the N-body field's (the paper's claim); m is the count law's conditional mean.
    mean_cell = c (optional; None: m = m_b(μ) voxel by voxel): in a bin with a map, m_b(μ) is rescaled inside
    every aligned cell of c³ voxels (planes [c·i, c·i + c) on each axis) to the cell's painted total Σμ, so the
    map moves halos only between the voxels of one cell and the field on scales above c voxels stays the
    painted one (halopaint.sample.law_means).
    exclusion[b][a] = q_ab (optional; None: bins are drawn independently given their means): the cross-bin
    law. Bins are drawn heaviest first; bin b's mean in a voxel is multiplied by q_ab^(n_a) for every heavier
    bin a > b drawn there (N-body halos of different masses exclude each other in a voxel), then rescaled
    inside every aligned cell of mean_cell³ voxels to the cell's total before the factors
    (halopaint.sample.exclusion_means); entries with a ≤ b are 1. Needs mean_cell.
    mean_cap[b] = c_b (optional; None, or None in bin b: no cap) [halos per voxel]: the most halos bin b's law
    expects in one voxel. Inside every aligned cell of mean_cell³ voxels the excess of the voxels above c_b
    goes to the cell's other voxels with m > 0, in proportion to their m (water filling), so the cell keeps its
    total (halopaint.sample.keep_cell_totals). With c_b = 1 the sub-Poisson family reaches any α ≥ −1 in every
    voxel (K = −1/α ≥ 1 = ⌈m⌉), so the law's pair count is the fitted one; above one halo per voxel the
    narrowest integer law of mean m still puts ⌊m⌋ halos in the voxel. Needs mean_cell.

    mass_slope[b] = β_b: catalogue masses follow dn/dlnM ∝ M^−β_b inside bin b's edges.
    velocity_bias[b] = g_b, velocity_infall[b] = γ_b [km/s] and velocity_dispersion[b] = σ_b [km/s]: a
    halo's velocity is g_b times the density file's /velocity at its position, plus γ_b times h∇δ of the
    density file's /density at its voxel (halopaint.sample.catalogue.voxel_density_gradient: infall towards
    the local overdensity), plus a per-component Gaussian of σ_b (None: not calibrated; g_b = 1 when only
    σ_b is given, γ_b = 0 without velocity_infall, as in older bundles).
    generator_sha256[b]: digest of bin b's generator weights the law was fitted with (a count model is
    only valid for the painted means it was fitted on; ModelBundle.load refuses a stale one).
    provenance: how it was fitted (command, data files with SHA-256, diagnostics).
    """

    alpha: list[list[float]]
    mu_breaks: list[list[float]]
    mass_slope: list[float] | None = None
    velocity_dispersion: list[float] | None = None
    velocity_bias: list[float] | None = None
    generator_sha256: list[str] | None = None
    velocity_infall: list[float] | None = None
    provenance: dict = field(default_factory=dict)
    law: str = "quadratic-variance"
    mean_mu: list[list[float]] | None = None
    mean_n: list[list[float]] | None = None
    mean_cell: int | None = None
    exclusion: list[list[float]] | None = None
    mean_cap: list[float | None] | None = None

    def __post_init__(self):
        n = len(self.alpha)
        if self.law != "quadratic-variance":
            raise ValueError(f"unknown count law {self.law!r}")
        if n == 0 or len(self.mu_breaks) != n:
            raise ValueError(f"count model: {n} alpha tables for {len(self.mu_breaks)} break lists")
        for b, (a, br) in enumerate(zip(self.alpha, self.mu_breaks)):
            if len(a) != len(br) + 1 or not all(math.isfinite(x) for x in a):
                raise ValueError(f"count model bin {b}: need len(alpha) = len(mu_breaks) + 1, finite alpha")
            if any(not (math.isfinite(x) and x > 0) for x in br) or any(y <= x for x, y in zip(br, br[1:])):
                raise ValueError(f"count model bin {b}: mu_breaks must be positive and increasing")
        for name, values in (("mass_slope", self.mass_slope), ("velocity_dispersion", self.velocity_dispersion),
                             ("velocity_bias", self.velocity_bias), ("generator_sha256", self.generator_sha256),
                             ("velocity_infall", self.velocity_infall)):
            if values is not None and len(values) != n:
                raise ValueError(f"count model: {len(values)} {name} entries for {n} mass bins")
        if self.mass_slope is not None and not all(math.isfinite(x) for x in self.mass_slope):
            raise ValueError("count model: mass_slope must be finite")
        if self.velocity_dispersion is not None and not all(
                math.isfinite(x) and x >= 0 for x in self.velocity_dispersion):
            raise ValueError("count model: velocity_dispersion must be finite and ≥ 0 [km/s]")
        if self.velocity_bias is not None and not all(math.isfinite(x) and x > 0 for x in self.velocity_bias):
            raise ValueError("count model: velocity_bias must be finite and > 0")
        if self.velocity_infall is not None and not all(math.isfinite(x) for x in self.velocity_infall):
            raise ValueError("count model: velocity_infall must be finite [km/s]")
        self._check_mean_map(n)

    def _check_mean_map(self, n: int) -> None:
        if (self.mean_mu is None) != (self.mean_n is None):
            raise ValueError("count model: mean_mu and mean_n come together (the knots of the mean map)")
        if self.mean_cell is not None and not (isinstance(self.mean_cell, int) and self.mean_cell >= 1):
            raise ValueError(f"count model: mean_cell must be a positive number of voxels, got {self.mean_cell!r}")
        self._check_exclusion(n)
        self._check_cap(n)
        if self.mean_mu is None:
            return
        if len(self.mean_mu) != n or len(self.mean_n) != n:
            raise ValueError(f"count model: mean map for {len(self.mean_mu)} bins, the model has {n}")
        for b, (xs, ys) in enumerate(zip(self.mean_mu, self.mean_n)):
            if len(xs) != len(ys):
                raise ValueError(f"count model bin {b}: the mean map needs as many values as knots")
            if not all(math.isfinite(v) and v > 0 for v in (*xs, *ys)):
                raise ValueError(f"count model bin {b}: mean-map knots and values must be finite and > 0")
            if any(x1 <= x0 for x0, x1 in zip(xs, xs[1:])) or any(y1 < y0 for y0, y1 in zip(ys, ys[1:])):
                raise ValueError(f"count model bin {b}: the mean map must be monotone (knots increasing, "
                                 "values non-decreasing)")

    def _check_exclusion(self, n: int) -> None:
        q = self.exclusion
        if q is None:
            return
        if len(q) != n or any(len(row) != n for row in q):
            raise ValueError(f"count model: the exclusion matrix must be {n} × {n} (one row per mass bin)")
        if not all(math.isfinite(x) and x > 0 for row in q for x in row):
            raise ValueError("count model: exclusion factors must be finite and > 0")
        if any(q[b][a] != 1.0 for b in range(n) for a in range(b + 1)):
            raise ValueError("count model: exclusion[b][a] must be 1 for a ≤ b (only heavier bins act on a bin)")
        if self.mean_cell is None:
            raise ValueError("count model: an exclusion law needs mean_cell (the cells it keeps totals in)")

    def _check_cap(self, n: int) -> None:
        caps = self.mean_cap
        if caps is None:
            return
        if len(caps) != n:
            raise ValueError(f"count model: {len(caps)} mean_cap entries for {n} mass bins")
        if not all(c is None or (math.isfinite(c) and c > 0) for c in caps):
            raise ValueError("count model: mean_cap entries must be None or finite and > 0 [halos per voxel]")
        if self.mean_cell is None and any(c is not None for c in caps):
            raise ValueError("count model: a mean cap needs mean_cell (the cells it keeps totals in)")

    @property
    def n_bins(self) -> int:
        return len(self.alpha)

    def cap_of(self, mass_bin: int) -> float | None:
        """Bin b's cap on the law's mean per voxel [halos], or None."""
        return None if self.mean_cap is None else self.mean_cap[mass_bin]

    def alpha_of(self, mass_bin: int, mu: np.ndarray) -> np.ndarray:
        """α_b(μ) for counts μ (any shape) → float64 array of μ's shape."""
        table = np.asarray(self.alpha[mass_bin], dtype=np.float64)
        breaks = np.asarray(self.mu_breaks[mass_bin], dtype=np.float64)
        return table[np.searchsorted(breaks, np.asarray(mu, dtype=np.float64), side="right")]

    @property
    def has_mean_map(self) -> bool:
        """Whether E[n | μ] ≠ μ in some bin."""
        return self.mean_mu is not None and any(self.mean_mu)

    @property
    def cell(self) -> int | None:
        """The cell size [voxels] a draw must see whole (mean map in cells, exclusion or a cap), or None."""
        capped = self.mean_cap is not None and any(c is not None for c in self.mean_cap)
        return self.mean_cell if (self.has_mean_map or self.exclusion is not None or capped) else None

    def exclusion_from(self, mass_bin: int) -> dict[int, float]:
        """{heavier bin a: q_ab} acting on bin b (q ≠ 1 only); empty without a cross-bin law."""
        if self.exclusion is None:
            return {}
        row = self.exclusion[mass_bin]
        return {a: float(row[a]) for a in range(mass_bin + 1, self.n_bins) if row[a] != 1.0}

    def has_mean_map_in(self, mass_bin: int) -> bool:
        return self.mean_mu is not None and bool(self.mean_mu[mass_bin])

    def mean_of(self, mass_bin: int, mu: np.ndarray) -> np.ndarray:
        """E[n | μ] = m_b(μ) for painted means μ ≥ 0 (any shape) → float64 array of μ's shape (μ itself
        where bin b has no mean map)."""
        mu = np.asarray(mu, dtype=np.float64)
        if not self.has_mean_map_in(mass_bin):
            return mu.copy()
        return mean_map_values(mu, self.mean_mu[mass_bin], self.mean_n[mass_bin])

    def velocity_law(self, mass_bin: int) -> tuple[float, float, float]:
        """(g_b, σ_b [km/s], γ_b [km/s]) of a catalogue's halo velocities in bin b: v = g_b · field +
        γ_b · h∇δ (at the halo's voxel) + N(0, σ_b²) per component; g = 1 without velocity_bias, σ = 0
        without velocity_dispersion, γ = 0 without velocity_infall."""
        gain = 1.0 if self.velocity_bias is None else float(self.velocity_bias[mass_bin])
        sigma = 0.0 if self.velocity_dispersion is None else float(self.velocity_dispersion[mass_bin])
        infall = 0.0 if self.velocity_infall is None else float(self.velocity_infall[mass_bin])
        return gain, sigma, infall

    @property
    def has_infall(self) -> bool:
        """Whether any bin's velocity law has an infall term (then catalogues need the density planes)."""
        return self.velocity_infall is not None and any(x != 0.0 for x in self.velocity_infall)

    def select(self, bins) -> "CountModel":
        """The count model of mass bins `bins` (indices into this model), in that order."""
        pick = lambda v: None if v is None else [v[b] for b in bins]  # noqa: E731
        return replace(self, alpha=[list(self.alpha[b]) for b in bins],
                       mu_breaks=[list(self.mu_breaks[b]) for b in bins], mass_slope=pick(self.mass_slope),
                       velocity_dispersion=pick(self.velocity_dispersion), velocity_bias=pick(self.velocity_bias),
                       velocity_infall=pick(self.velocity_infall), generator_sha256=pick(self.generator_sha256),
                       mean_mu=pick(self.mean_mu), mean_n=pick(self.mean_n), mean_cap=pick(self.mean_cap),
                       exclusion=None if self.exclusion is None else [[self.exclusion[b][a] for a in bins]
                                                                      for b in bins])

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.mean_mu is None:            # older readers and older bundles' JSON stay unchanged
            del d["mean_mu"], d["mean_n"]
        if self.mean_cell is None:
            del d["mean_cell"]
        if self.exclusion is None:
            del d["exclusion"]
        if self.mean_cap is None:
            del d["mean_cap"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CountModel":
        floats = lambda v: None if v is None else [float(x) for x in v]  # noqa: E731
        return cls(alpha=[floats(a) for a in d["alpha"]], mu_breaks=[floats(m) for m in d["mu_breaks"]],
                   mass_slope=floats(d.get("mass_slope")), velocity_dispersion=floats(d.get("velocity_dispersion")),
                   velocity_bias=floats(d.get("velocity_bias")), velocity_infall=floats(d.get("velocity_infall")),
                   generator_sha256=None if d.get("generator_sha256") is None else [str(s) for s in
                                                                                    d["generator_sha256"]],
                   provenance=dict(d.get("provenance", {})), law=str(d.get("law", "quadratic-variance")),
                   mean_mu=None if d.get("mean_mu") is None else [floats(m) for m in d["mean_mu"]],
                   mean_n=None if d.get("mean_n") is None else [floats(m) for m in d["mean_n"]],
                   mean_cell=None if d.get("mean_cell") is None else int(d["mean_cell"]),
                   exclusion=None if d.get("exclusion") is None else [floats(r) for r in d["exclusion"]],
                   mean_cap=None if d.get("mean_cap") is None else [None if c is None else float(c)
                                                                      for c in d["mean_cap"]])


@dataclass
class BundleMetadata:
    """What a bundle was trained for; paint refuses inputs that disagree (unless told otherwise).

    `count_model` (optional; bundles without one still load) is the per-bin law `halopaint sample` draws
    integer counts from; it is left out of the JSON when absent, so older bundles' metadata is unchanged.
    """

    mass_bin_edges: list[float]              # [M☉/h], n_bins + 1
    voxel_size: float                        # [Mpc/h]
    redshift: float
    cosmology: Cosmology = field(default_factory=Cosmology)
    density_recipe: DensityRecipe = field(default_factory=DensityRecipe)
    input_normalisation: InputNormalisation = field(default_factory=InputNormalisation)
    training: dict = field(default_factory=dict)   # command, data files + seeds, steps, …
    count_model: CountModel | None = None

    def to_json(self) -> str:
        d = asdict(self)
        if self.count_model is None:
            del d["count_model"]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BundleMetadata":
        d = json.loads(text)
        count = d.get("count_model")
        return cls(mass_bin_edges=[float(e) for e in d["mass_bin_edges"]],
                   voxel_size=float(d["voxel_size"]), redshift=float(d["redshift"]),
                   cosmology=Cosmology(**d["cosmology"]),
                   density_recipe=DensityRecipe(**d["density_recipe"]),
                   input_normalisation=InputNormalisation(**d["input_normalisation"]),
                   training=dict(d.get("training", {})),
                   count_model=None if count is None else CountModel.from_dict(count))


class ModelBundleError(HalopaintError):
    """A model file is missing, foreign, tampered or inconsistent."""


@dataclass
class ModelBundle:
    """One generator per mass bin (state_dicts in `Generator` naming) + metadata."""

    spec: GeneratorSpec
    generators: list[dict[str, torch.Tensor]]
    metadata: BundleMetadata

    @property
    def n_bins(self) -> int:
        return len(self.generators)

    @property
    def ghost_width(self) -> int:
        return self.spec.ghost_width

    def generator(self, mass_bin: int) -> Generator:
        """A Generator module loaded with the weights of `mass_bin`."""
        gen = Generator(self.spec)
        gen.load_state_dict(self.generators[mass_bin])
        return gen

    @classmethod
    def from_generators(cls, generators: list[Generator], metadata: BundleMetadata) -> "ModelBundle":
        spec = generators[0].spec
        return cls(spec=spec, metadata=metadata,
                   generators=[{k: v.detach().cpu().clone() for k, v in g.state_dict().items()}
                               for g in generators])

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary name, then rename)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ModelBundleError(f"cannot write {path}: directory {path.parent} does not exist")
        spec_text = json.dumps(self.spec.to_dict(), sort_keys=True)
        meta_text = self.metadata.to_json()
        payload = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "spec": spec_text,
            "metadata": meta_text,
            "ghost_width": self.ghost_width,
            "generators": self.generators,
            "checksum": bundle_checksum(spec_text, meta_text, self.generators),
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelBundle":
        """Load and validate a bundle; never executes code from the file."""
        path = Path(resolve_model_path(path))
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ModelBundleError(f"{path}: no such model file") from None
        except Exception as exc:  # unpickling refused, truncated zip, not a torch file, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ModelBundleError(f"{path}: not a halopaint model bundle ({first[:120]})") from None
        if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
            raise ModelBundleError(f"{path}: not a halopaint model bundle (format tag missing)")
        if payload.get("version") != BUNDLE_VERSION:
            raise ModelBundleError(f"{path}: unsupported bundle version {payload.get('version')}")
        try:
            spec = GeneratorSpec.from_dict(json.loads(payload["spec"]))
            metadata = BundleMetadata.from_json(payload["metadata"])
            generators = list(payload["generators"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelBundleError(f"{path}: corrupt bundle metadata ({exc})") from None
        try:
            check_bundle_metadata(metadata, str(path))
        except ValidationError as exc:
            raise ModelBundleError(str(exc)) from None
        if payload.get("ghost_width") != spec.ghost_width:
            raise ModelBundleError(f"{path}: ghost width {payload.get('ghost_width')} disagrees with the architecture")
        if len(generators) != len(metadata.mass_bin_edges) - 1 or not generators:
            raise ModelBundleError(f"{path}: {len(generators)} generators for "
                                   f"{len(metadata.mass_bin_edges) - 1} mass bins")
        expected = {k: tuple(v.shape) for k, v in Generator(spec).state_dict().items()}
        for i, sd in enumerate(generators):
            got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in sd.items()} \
                if isinstance(sd, dict) else None
            if got != expected:
                raise ModelBundleError(f"{path}: generator {i} weights do not match the architecture")
            if not all(torch.isfinite(v).all() for v in sd.values()):
                raise ModelBundleError(f"{path}: generator {i} has non-finite weights")
        if payload.get("checksum") != bundle_checksum(payload["spec"], payload["metadata"], generators):
            raise ModelBundleError(f"{path}: checksum mismatch: the file was modified or damaged after it "
                                   "was written")
        bundle = cls(spec=spec, generators=generators, metadata=metadata)
        problem = bundle.count_model_problem()
        if problem:
            raise ModelBundleError(f"{path}: {problem}")
        return bundle

    def count_model_problem(self) -> str | None:
        """Why metadata.count_model does not fit this bundle's generators (None: it fits, or there is none)."""
        cm = self.metadata.count_model
        if cm is None:
            return None
        if cm.n_bins != self.n_bins:
            return f"count model has {cm.n_bins} mass bins, the bundle {self.n_bins}"
        if cm.generator_sha256 is not None:
            stale = [b for b in range(self.n_bins) if cm.generator_sha256[b] != generator_digest(self.generators[b])]
            if stale:
                return (f"count model was fitted for other weights in mass bin(s) {stale} (the generators changed "
                        "after the fit, e.g. by count calibration): refit it with jobs/fit_count_model.py")
        return None


def merge_bundles(parts: list[ModelBundle], training: dict | None = None) -> ModelBundle:
    """One bundle from bundles of adjacent mass-bin ranges (bins trained in separate runs), in order.

    Every part must share the architecture, voxel size, redshift, cosmology, density recipe and input
    normalisation, and part i's last mass-bin edge must be part i+1's first. The merged metadata.training
    is {"parts": [each part's training metadata], **training}.
    """
    if not parts:
        raise ModelBundleError("merge_bundles needs at least one bundle")
    first = parts[0]
    edges = list(first.metadata.mass_bin_edges)
    generators = list(first.generators)
    for i, part in enumerate(parts[1:], start=1):
        m, m0 = part.metadata, first.metadata
        same = {"architecture": part.spec == first.spec, "voxel size": m.voxel_size == m0.voxel_size,
                "redshift": m.redshift == m0.redshift, "cosmology": m.cosmology == m0.cosmology,
                "density recipe": m.density_recipe == m0.density_recipe,
                "input normalisation": m.input_normalisation == m0.input_normalisation}
        for what, ok in same.items():
            if not ok:
                raise ModelBundleError(f"bundle {i} differs from bundle 0 in its {what}")
        if not math.isclose(m.mass_bin_edges[0], edges[-1], rel_tol=1e-9):
            raise ModelBundleError(f"bundle {i} starts at mass {m.mass_bin_edges[0]:g}, not at the previous "
                                   f"bundle's last edge {edges[-1]:g}: parts must be adjacent and in order")
        edges += list(m.mass_bin_edges[1:])
        generators += list(part.generators)
    meta = replace(first.metadata, mass_bin_edges=[float(e) for e in edges],
                   training={"parts": [p.metadata.training for p in parts], **(training or {})},
                   count_model=merge_count_models([p.metadata.count_model for p in parts]))
    return ModelBundle(spec=first.spec, generators=generators, metadata=meta)


def merge_count_models(models: list[CountModel | None]) -> CountModel | None:
    """Per-bin concatenation of the parts' count models (None unless every part has one)."""
    if not models or any(m is None for m in models):
        return None
    cat = lambda name: None if any(getattr(m, name) is None for m in models) else [  # noqa: E731
        v for m in models for v in getattr(m, name)]
    return CountModel(alpha=cat("alpha"), mu_breaks=cat("mu_breaks"), mass_slope=cat("mass_slope"),
                      velocity_dispersion=cat("velocity_dispersion"), velocity_bias=cat("velocity_bias"),
                      velocity_infall=cat("velocity_infall"), generator_sha256=cat("generator_sha256"),
                      mean_mu=_merged_mean_map(models, "mean_mu"), mean_n=_merged_mean_map(models, "mean_n"),
                      mean_cell=_merged_mean_cell(models), provenance={"parts": [m.provenance for m in models]},
                      mean_cap=None if all(m.mean_cap is None for m in models) else [
                          m.cap_of(b) for m in models for b in range(m.n_bins)])


def _merged_mean_cell(models: list[CountModel]) -> int | None:
    cells = {m.mean_cell for m in models if m.has_mean_map or m.cell is not None}
    if len(cells) > 1:
        raise ValueError("count models with mean maps in cells of different sizes cannot merge: "
                         f"{sorted(cells, key=str)}")
    return cells.pop() if cells else None


def _merged_mean_map(models: list[CountModel], name: str) -> list[list[float]] | None:
    """The parts' mean-map knots (or values) per bin; a part without a map contributes E[n | μ] = μ bins."""
    if not any(m.has_mean_map for m in models):
        return None
    return [list(v) for m in models for v in (getattr(m, name) or [[] for _ in range(m.n_bins)])]


def bundle_checksum(spec_text: str, metadata_text: str, generators: list[dict[str, torch.Tensor]]) -> str:
    """sha256 over the architecture JSON, the metadata JSON and every weight (name, shape, float32 bytes)."""
    h = hashlib.sha256()
    h.update(spec_text.encode())
    h.update(b"\0")
    h.update(metadata_text.encode())
    for sd in generators:
        for name in sorted(sd):
            t = sd[name].detach().cpu().to(torch.float32).contiguous()
            h.update(f"\0{name}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def generator_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over one generator's weights (name, shape, float32 bytes), as hex."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().to(torch.float32).contiguous()
        h.update(f"\0{name}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def atomic_torch_save(payload: dict, path: Path) -> None:
    """torch.save to a temporary name in the same directory, then an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def shipped_models() -> dict[float, Path]:
    """Redshift → path of every model bundle shipped in the package (z = 0 always)."""
    return {z: path for z, path in SHIPPED_MODELS.items() if path.exists()}


def resolve_model_path(model: str | os.PathLike, redshift: float | None = None) -> Path:
    """'default' → the shipped bundle trained nearest `redshift` (z = 0 when None; ties → the lower z);
    anything else is a path. Whether the chosen model's redshift is close enough is the caller's check."""
    if str(model) == "default":
        models = shipped_models()
        if 0.0 not in models:
            raise ModelBundleError(f"the shipped default model is missing ({DEFAULT_MODEL_PATH})")
        z = 0.0 if redshift is None else float(redshift)
        return models[min(models, key=lambda zm: (abs(zm - z), zm))]
    return Path(model)


def count_parameters(module: nn.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in module.parameters())
