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
from halopaint.count_model import CountModel, mean_map_values, merge_count_models  # noqa: F401 (re-exported)
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
