"""WGAN-GP training of the paper's generator, one generator per mass bin, data-parallel over ranks.

Protocol (Kodi Ramanah et al. 2019, the default): a random (P+2g)³ density patch and the matching P³ halo
patch (periodic wrap), the same one of the 24 proper cube rotations applied to both; n_critic = 5 critic
steps per generator step; per-sample gradient penalty at random interpolates, λ = 10; Adam(1e-4,
β = (0.5, 0.999)) for both nets; batch 1 per stream.

Optional supervised term (`supervised_weight` > 0): the generator loss adds the Poisson negative
log-likelihood of the true counts given the painted expected counts (`poisson_nll`). With
`adversarial_weight = 0` the critic is skipped entirely (pure supervised regression, cheapest on CPU).

Parallelism: each rank owns one stream of patches per bin, seeded from (seed, rank, bin). Gradients are
averaged with one all-reduce per optimiser step (halopaint.ddp.GradientSync), so W ranks do exactly the
global work of one process holding W streams (`Trainer(..., streams=range(W))`, used by the tests).

Files next to `--out MODEL`: MODEL (the bundle, rewritten at every checkpoint), MODEL.ckpt (atomic
checkpoint: every bin's nets + optimisers, every stream's RNG state), MODEL.log.jsonl (losses),
MODEL.losses.png (training / validation curves, paper Fig. 7).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import halopaint.kernels
from halopaint.config import Cosmology, DensityRecipe, TrainConfig
from halopaint.errors import HalopaintError
from halopaint.fields import (FieldFile, FieldFileError, atomic_path, check_writable, file_provenance, file_sha256,
                           same_voxel_size)
from halopaint.model import (BundleMetadata, Critic, Generator, InputNormalisation, ModelBundle,
                          atomic_torch_save, resolve_model_path)
from halopaint.patches import PatchSampler, Region

CHECKPOINT_FORMAT = "halopaint-train-checkpoint"
CHECKPOINT_VERSION = 1
MIN_CRITIC_PATCH = 19   # 19 → 7 → 3 → 1 → 1 through the paper critic's valid convs


class TrainingError(HalopaintError):
    """Bad training input or an inconsistent checkpoint."""


# --------------------------------------------------------------------------------------------- losses

def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor) -> torch.Tensor:
    """Per-sample WGAN-GP penalty mean_b (‖∇_x̂ D(x̂_b)‖₂ − 1)², x̂_b = ε_b·real_b + (1−ε_b)·fake_b.

    real, fake: (B, 1, P, P, P); eps: (B,) in [0, 1). Differentiable w.r.t. the critic's parameters
    (double backward).
    """
    e = eps.view(-1, *([1] * (real.ndim - 1))).to(real)
    x = (e * real + (1 - e) * fake).detach().requires_grad_(True)
    score = critic(x)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


def poisson_nll(expected: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of λ − n·log(λ + 1e-8) + log n! (the Poisson NLL of counts n given λ)."""
    return F.poisson_nll_loss(expected, counts, log_input=False, full=False, eps=1e-8, reduction="mean") + \
        torch.lgamma(counts + 1).mean()


# ----------------------------------------------------------------------------------------------- data

@dataclass
class TrainingData:
    """Boxes in memory: train/validation lists of (density (N³), halos (n_sel, N³)) and their regions.

    `bins` are the absolute mass-bin indices selected; halos[j] is bin bins[j].
    """

    train: list
    train_regions: list
    validation: list
    validation_regions: list
    bins: tuple[int, ...]
    mass_bin_edges: list[float]          # all edges of the files [M☉/h]
    voxel_size: float                    # [Mpc/h]
    redshift: float
    cosmology: Cosmology
    density_recipe: DensityRecipe
    provenance: dict

    @classmethod
    def from_arrays(cls, train, validation=(), mass_bin_edges=None, voxel_size: float = 4.0,
                    bins=None) -> "TrainingData":
        """In-memory boxes (full periodic regions): train/validation lists of (density, halos (n, N³))."""
        n_bins = train[0][1].shape[0]
        bins = tuple(range(n_bins)) if bins is None else tuple(bins)
        edges = list(np.logspace(12, 14, n_bins + 1)) if mass_bin_edges is None else list(mass_bin_edges)
        sel = lambda boxes: [(d, h[list(bins)]) for d, h in boxes]  # noqa: E731
        return cls(train=sel(train), train_regions=[Region(d.shape[0]) for d, _ in train],
                   validation=sel(validation), validation_regions=[Region(d.shape[0]) for d, _ in validation],
                   bins=bins, mass_bin_edges=edges, voxel_size=voxel_size, redshift=0.0,
                   cosmology=Cosmology(), density_recipe=DensityRecipe(), provenance={"data": "in memory"})

    @property
    def selected_edges(self) -> list[float]:
        return [float(e) for e in self.mass_bin_edges[self.bins[0]:self.bins[-1] + 2]]


def _read_boxes(paths, bins, role: str):
    boxes, infos = [], []
    for path in paths:
        try:
            with FieldFile(path, require=("density", "halos")) as f:
                info = f.info
                for b in bins:
                    if not 0 <= b < info.n_bins:
                        raise TrainingError(f"{path}: mass bin {b} does not exist "
                                            f"(the file has {info.n_bins} bins: 0..{info.n_bins - 1})")
                boxes.append((f.read_density(), f.read_halos(bins)))
                infos.append(info)
        except FieldFileError:
            raise
        except OSError as exc:
            raise TrainingError(f"{path}: cannot read {role} data ({exc})") from None
    return boxes, infos


def load_data(cfg: TrainConfig, ghost: int) -> TrainingData:
    """Read and cross-check the training (and validation) files; choose regions; check the patch fits."""
    if not cfg.data:
        raise TrainingError("no training data given (--data FILE.h5 …)")
    with FieldFile(cfg.data[0], require=("density", "halos")) as f:
        first = f.info
    n_bins = first.n_bins
    bins = tuple(range(n_bins)) if cfg.mass_bins is None else tuple(sorted(set(cfg.mass_bins)))
    for b in bins:
        if not 0 <= b < n_bins:
            raise TrainingError(f"mass bin {b} does not exist (the data has {n_bins} bins: 0..{n_bins - 1})")
    if list(bins) != list(range(bins[0], bins[-1] + 1)):
        raise TrainingError(f"mass bins {','.join(map(str, bins))} are not adjacent: a bundle covers "
                            "adjacent bins; train the others in a separate run")
    train, tinfos = _read_boxes(cfg.data, bins, "training")
    val, vinfos = _read_boxes(cfg.validation, bins, "validation")
    for info in tinfos + vinfos:
        if not same_voxel_size(info.voxel_size, first.voxel_size):
            raise TrainingError(f"{info.path}: voxel size {info.voxel_size:g} Mpc/h differs from "
                                f"{first.path} ({first.voxel_size:g} Mpc/h)")
        if not np.allclose(info.mass_bin_edges, first.mass_bin_edges, rtol=1e-6):
            raise TrainingError(f"{info.path}: mass_bin_edges differ from {first.path}")
        if not np.isclose(info.redshift, first.redshift, atol=1e-6):
            raise TrainingError(f"{info.path}: redshift {info.redshift:g} differs from {first.path} "
                                f"({first.redshift:g})")
    side = cfg.patch + 2 * ghost
    if cfg.patch < 1:
        raise TrainingError(f"--patch must be positive, got {cfg.patch}")
    if cfg.adversarial_weight > 0 and cfg.patch < MIN_CRITIC_PATCH:
        raise TrainingError(f"--patch {cfg.patch} is too small for the critic (needs ≥ {MIN_CRITIC_PATCH}; "
                            "or train supervised only with --adversarial-weight 0)")
    if val:
        t_regions = [Region(i.grid) for i in tinfos]
        v_regions = [Region(i.grid) for i in vinfos]
    elif cfg.validation_fraction > 0:
        t_regions, v_regions = [], []
        for info, box in zip(tinfos, list(train)):
            n_val = int(round(cfg.validation_fraction * info.grid))
            if n_val < 1 or n_val >= info.grid:
                raise TrainingError(f"validation fraction {cfg.validation_fraction} leaves no "
                                    f"{'validation' if n_val < 1 else 'training'} planes in {info.path}")
            t_regions.append(Region(info.grid, 0, info.grid - n_val))
            v_regions.append(Region(info.grid, info.grid - n_val, info.grid))
            val.append(box)
        vinfos = list(tinfos)
    else:
        t_regions = [Region(i.grid) for i in tinfos]
        v_regions = []
    for info, region in list(zip(tinfos, t_regions)) + list(zip(vinfos, v_regions)):
        extent = region.stop - region.x0
        if side > info.grid or (not region.full and side > extent):
            where = f"box of {info.grid}³" if region.full else \
                f"x-range [{region.x0}, {region.stop}) of {info.path}'s {info.grid}³ box"
            raise TrainingError(f"patch {cfg.patch} (+2×{ghost} ghost = {side}) is larger than the {where}: "
                                "use a smaller --patch" + ("" if region.full else
                                                           " or a separate --validation file"))
    recipe_text = first.attrs.get("density_recipe")
    try:
        recipe = DensityRecipe.from_json(recipe_text) if recipe_text else DensityRecipe()
    except (TypeError, ValueError):
        recipe = DensityRecipe()
    provenance = {
        "training_files": [file_provenance(p, i.attrs) for p, i in zip(cfg.data, tinfos)],
        "validation_files": [file_provenance(p, i.attrs) for p, i in zip(cfg.validation, vinfos)]
        if cfg.validation else [],
        "validation": "files" if cfg.validation else
        (f"held-out last {cfg.validation_fraction:g} of the x-range of each training box"
         if cfg.validation_fraction > 0 else "none"),
    }
    return TrainingData(train=train, train_regions=t_regions, validation=val, validation_regions=v_regions,
                        bins=bins, mass_bin_edges=[float(e) for e in first.mass_bin_edges],
                        voxel_size=float(first.voxel_size), redshift=float(first.redshift),
                        cosmology=first.cosmology, density_recipe=recipe, provenance=provenance)


# ------------------------------------------------------------------------------------------- training

class BinTrainer:
    """Generator + critic + optimisers + this process's patch streams for one mass bin."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, j: int, streams, device: torch.device,
                 normalisation: InputNormalisation, init_state: dict | None = None):
        self.cfg, self.data, self.j, self.device = cfg, data, j, device
        self.bin = data.bins[j]
        self.norm = normalisation
        torch.manual_seed(1_000_003 * cfg.seed + self.bin)
        self.gen = Generator().to(device)
        if init_state is not None:
            self.gen.load_state_dict(init_state)
        elif cfg.supervised_weight > 0:
            # supervised runs start the output layer near the mean count of this bin (small weights, bias =
            # mean), so the Poisson fit does not first spend hundreds of steps finding the overall level
            mean = float(np.mean([h[j].mean() for _, h in data.train]))
            with torch.no_grad():
                self.gen.out.weight.mul_(0.1)
                self.gen.out.bias.fill_(mean)
        # on CPU the channels-last layout makes the 3D convolutions ~10–30 % faster (same results to rounding)
        self.memory_format = torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format
        self.gen = self.gen.to(memory_format=self.memory_format)
        # supervised-only training (adversarial_weight = 0) has no critic at all
        self.critic = Critic(cfg.patch).to(device) if cfg.adversarial_weight > 0 else None
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=tuple(cfg.betas)) \
            if self.critic is not None else None
        # exponential moving average of the generator weights (what the bundle ships when ema_decay > 0)
        self.ema = {k: v.detach().clone() for k, v in self.gen.state_dict().items()} \
            if cfg.ema_decay > 0 else None
        self.n_updates = 0
        g = self.gen.ghost_width
        boxes = [(d, h[j]) for d, h in data.train]
        self.streams = [PatchSampler(boxes, data.train_regions, cfg.patch, g,
                                     np.random.SeedSequence([cfg.seed, r, self.bin]), cfg.rotate)
                        for r in streams]
        self.eval_sets = {}
        n = cfg.validation_patches
        if n > 0:
            self.eval_sets["train"] = PatchSampler(boxes, data.train_regions, cfg.patch, g,
                                                   np.random.SeedSequence([cfg.seed, 2**31 - 1, self.bin]),
                                                   cfg.rotate).draw(n)
            if data.validation:
                vboxes = [(d, h[j]) for d, h in data.validation]
                self.eval_sets["val"] = PatchSampler(vboxes, data.validation_regions, cfg.patch, g,
                                                     np.random.SeedSequence([cfg.seed, 2**31 - 2, self.bin]),
                                                     cfg.rotate).draw(n)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def _input(self, density: np.ndarray) -> torch.Tensor:
        x = self._tensor(self.norm.apply(density).astype(np.float32))
        return x.contiguous(memory_format=self.memory_format)

    def critic_step(self, sync) -> dict:
        self.opt_c.zero_grad(set_to_none=True)
        n = len(self.streams)
        rec = {"critic_loss": 0.0, "wasserstein": 0.0, "gp": 0.0}
        for s in self.streams:
            d, h = s.draw(self.cfg.batch_size)
            eps = self._tensor(s.uniform(self.cfg.batch_size))
            real = self._tensor(h)
            with torch.no_grad():
                fake = self.gen(self._input(d))
            w = self.critic(real).mean() - self.critic(fake).mean()
            gp = gradient_penalty(self.critic, real, fake, eps)
            loss = -w + self.cfg.gp_lambda * gp
            loss.backward()            # summed over streams; GradientSync.average divides once
            rec["critic_loss"] += loss.item() / n
            rec["wasserstein"] += w.item() / n
            rec["gp"] += gp.item() / n
        sync.average(self.critic.parameters(), n)
        self.opt_c.step()
        return rec

    def generator_step(self, sync) -> dict:
        self.opt_g.zero_grad(set_to_none=True)
        n = len(self.streams)
        adversarial = self.cfg.adversarial_weight > 0
        rec = {"gen_loss": 0.0, "poisson_nll": 0.0}
        for s in self.streams:
            d, h = s.draw(self.cfg.batch_size)
            real = self._tensor(h)
            fake = self.gen(self._input(d))
            nll = poisson_nll(fake, real)
            loss = self.cfg.supervised_weight * nll if self.cfg.supervised_weight > 0 else fake.sum() * 0
            if adversarial:
                loss = loss - self.cfg.adversarial_weight * self.critic(fake).mean()
            loss.backward()
            rec["gen_loss"] += loss.item() / n
            rec["poisson_nll"] += nll.item() / n
        sync.average(self.gen.parameters(), n)
        self.opt_g.step()
        self.n_updates += 1
        if self.ema is not None:
            decay = min(self.cfg.ema_decay, (1 + self.n_updates) / (10 + self.n_updates))
            with torch.no_grad():
                for k, v in self.gen.state_dict().items():
                    self.ema[k].mul_(decay).add_(v, alpha=1 - decay)
        return rec

    def shipped_generator(self) -> Generator:
        """The generator the bundle holds: the EMA weights when enabled, else the current ones."""
        if self.ema is None:
            return self.gen
        g = Generator(self.gen.spec).to(self.device, memory_format=self.memory_format)
        g.load_state_dict(self.ema)
        return g

    def iteration(self, sync) -> dict:
        """One generator iteration: n_critic critic steps (unless supervised-only) + one generator step."""
        rec = {}
        if self.cfg.adversarial_weight > 0:
            for _ in range(self.cfg.n_critic):
                rec = self.critic_step(sync)
        rec.update(self.generator_step(sync))
        return rec

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Critic Wasserstein estimate, Poisson NLL and count ratio on the fixed train/val patches."""
        out = {}
        gen = self.shipped_generator()
        # validation paints through the paint engine's kernels (the fastest correct path on this device)
        paint = halopaint.kernels.select(self.device, "auto")(gen.state_dict(), gen.spec, self.device)
        for name, (d, h) in self.eval_sets.items():
            real = self._tensor(h)
            fake = torch.cat([paint(self._input(d[i:i + 1])).to(real) for i in range(len(d))])
            if self.critic is not None:
                out[f"w_{name}"] = (self.critic(real).mean() - self.critic(fake).mean()).item()
            out[f"nll_{name}"] = poisson_nll(fake, real).item()
            out[f"count_ratio_{name}"] = (fake.sum() / real.sum().clamp_min(1e-12)).item()
        return out

    def state(self) -> dict:
        st = {"bin": self.bin, "generator": self.gen.state_dict(), "opt_g": self.opt_g.state_dict(),
              "n_updates": self.n_updates}
        if self.ema is not None:
            st["ema"] = self.ema
        if self.critic is not None:
            st.update(critic=self.critic.state_dict(), opt_c=self.opt_c.state_dict())
        return st

    def load_state(self, st: dict) -> None:
        self.gen.load_state_dict(st["generator"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.n_updates = int(st.get("n_updates", 0))
        if self.ema is not None:
            self.ema = {k: v.to(self.device).clone() for k, v in
                        (st["ema"] if "ema" in st else self.gen.state_dict()).items()}
        if self.critic is not None:
            if "critic" not in st:
                raise TrainingError("the checkpoint was trained without a critic (--adversarial-weight 0); "
                                    "start adversarial training from its bundle with --init instead")
            self.critic.load_state_dict(st["critic"])
            self.opt_c.load_state_dict(st["opt_c"])
        for opt in (self.opt_g, self.opt_c):   # the resuming command's learning rate wins
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = self.cfg.lr


class Trainer:
    """All selected bins, trained round-robin one generator iteration at a time.

    streams: the stream ids (= ranks) this process owns; a DDP rank owns [rank], one process
    reproducing W ranks owns range(W).
    """

    def __init__(self, cfg: TrainConfig, data: TrainingData, streams, device: torch.device, sync,
                 init_bundle: ModelBundle | None = None):
        self.cfg, self.data, self.sync, self.device = cfg, data, sync, device
        self.streams = list(streams)
        self.norm = init_bundle.metadata.input_normalisation if init_bundle else InputNormalisation()
        init = [None] * len(data.bins)
        if init_bundle is not None:
            init = _init_states(init_bundle, data)
        self.bins = [BinTrainer(cfg, data, j, self.streams, device, self.norm, init[j])
                     for j in range(len(data.bins))]
        self.step = 0
        self.history: list[dict] = []     # earlier invocations (resumed runs): command, steps, data
        self.segment_start = 0
        self.command = ""
        # what --init warm-started the weights from (kept across resumes: "default" may change meanwhile)
        self.init_record: dict | None = None

    def segments(self) -> list[dict]:
        """Every invocation that contributed to the current weights, this one last."""
        now = {"command": self.command, "from_step": self.segment_start, "to_step": self.step,
               "training_files": [f["file"] for f in self.data.provenance.get("training_files", [])]}
        return [*self.history, now]

    def iteration(self) -> list[dict]:
        recs = []
        for bt in self.bins:
            rec = {"step": self.step + 1, "bin": bt.bin}
            rec.update(bt.iteration(self.sync))
            recs.append(rec)
        self.step += 1
        return recs

    def bundle(self, command: str, extra: dict | None = None) -> ModelBundle:
        d = self.data
        init = {"init": self.init_record} if self.init_record else {}
        training = {"command": command, "commands": self.segments(), "steps": self.step, "config": _config_dict(self.cfg),
                    "world_size": self.sync.world_size * len(self.streams), "bins": list(d.bins),
                    **d.provenance, **init, **(extra or {})}
        meta = BundleMetadata(mass_bin_edges=d.selected_edges, voxel_size=d.voxel_size, redshift=d.redshift,
                              cosmology=d.cosmology, density_recipe=d.density_recipe,
                              input_normalisation=self.norm, training=training)
        return ModelBundle.from_generators([bt.shipped_generator() for bt in self.bins], meta)

    # ---- checkpoints
    def checkpoint_payload(self) -> dict | None:
        """Collective: gathers every rank's RNG states; returns the payload on rank 0, None elsewhere."""
        local = {str(sid): [json.dumps(bt.streams[k].state()) for bt in self.bins]
                 for k, sid in enumerate(self.streams)}
        gathered = self.sync.all_gather_object(local)
        rng = {}
        for part in gathered:
            rng.update(part)
        if _rank(self.sync) != 0:
            return None
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step,
                "n_streams": len(rng), "config": json.dumps(_config_dict(self.cfg), sort_keys=True),
                "bins": list(self.data.bins), "per_bin": [bt.state() for bt in self.bins], "rng": rng,
                "history": json.dumps(self.segments()), "init": json.dumps(self.init_record)}

    def restore(self, payload: dict, path: str) -> None:
        n_streams = self.sync.world_size * len(self.streams)
        if payload.get("n_streams") != n_streams:
            raise TrainingError(f"{path}: checkpoint was written by {payload.get('n_streams')} ranks, "
                                f"this run has {n_streams}; resume with the same number of ranks")
        if list(payload.get("bins", [])) != list(self.data.bins):
            raise TrainingError(f"{path}: checkpoint trains mass bins {payload.get('bins')}, "
                                f"this run asks for {list(self.data.bins)}")
        saved = json.loads(payload["config"])
        for key in ("patch", "seed", "batch_size", "n_critic", "gp_lambda", "supervised_weight",
                    "adversarial_weight"):
            now = _config_dict(self.cfg)[key]
            if saved.get(key) != now:
                raise TrainingError(f"{path}: checkpoint has {key}={saved.get(key)}, this run {key}={now}")
        for bt, st in zip(self.bins, payload["per_bin"]):
            bt.load_state(st)
        for k, sid in enumerate(self.streams):
            states = payload["rng"][str(sid)]
            for bt, text in zip(self.bins, states):
                bt.streams[k].set_state(json.loads(text))
        self.step = int(payload["step"])
        self.history = json.loads(payload.get("history", "[]"))
        self.init_record = json.loads(payload.get("init", "null"))   # absent in older checkpoints: unknown
        self.segment_start = self.step


def _rank(sync) -> int:
    if getattr(sync, "distributed", False):
        import torch.distributed as dist
        return dist.get_rank()
    return 0


def _config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    d["data"], d["validation"] = list(cfg.data), list(cfg.validation)
    d["mass_bins"] = None if cfg.mass_bins is None else list(cfg.mass_bins)
    return d


def init_provenance(model: str, bundle: ModelBundle) -> dict:
    """What `--init MODEL` warm-started from: the name given, the file's SHA-256 and its training metadata."""
    path = resolve_model_path(model)
    return {"model": str(model), "file": path.name, "sha256": file_sha256(path),
            "training": bundle.metadata.training}


def _init_states(bundle: ModelBundle, data: TrainingData) -> list[dict]:
    edges = np.asarray(bundle.metadata.mass_bin_edges)
    states = []
    for b in data.bins:
        lo, hi = data.mass_bin_edges[b], data.mass_bin_edges[b + 1]
        match = [i for i in range(bundle.n_bins) if np.isclose(edges[i], lo, rtol=1e-6)
                 and np.isclose(edges[i + 1], hi, rtol=1e-6)]
        if not match:
            raise TrainingError(f"--init model has no generator for mass bin {b} [{lo:.3g}, {hi:.3g}) M☉/h")
        if not same_voxel_size(bundle.metadata.voxel_size, data.voxel_size):
            raise TrainingError(f"--init model was trained at {bundle.metadata.voxel_size:g} Mpc/h voxels, "
                                f"the data has {data.voxel_size:g}")
        states.append(bundle.generators[match[0]])
    return states


# ------------------------------------------------------------------------------------------ file I/O

@dataclass(frozen=True)
class TrainPaths:
    bundle: Path
    checkpoint: Path
    log: Path
    plot: Path

    @classmethod
    def for_output(cls, out: str) -> "TrainPaths":
        p = Path(out)
        return cls(p, p.with_name(p.name + ".ckpt"), p.with_name(p.name + ".log.jsonl"),
                   p.with_name(p.name + ".losses.png"))


def save_checkpoint(payload: dict, path: Path) -> None:
    """Atomic: write a temporary file in the same directory, then rename."""
    atomic_torch_save(payload, path)


def load_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise TrainingError(f"{path}: not a halopaint training checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a halopaint training checkpoint (format tag missing)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: unsupported checkpoint version {payload.get('version')}")
    return payload


def _read_log(path: Path, upto_step: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    recs = []
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if upto_step is None or r.get("step", 0) <= upto_step:
                recs.append(r)
    return recs


def _rewrite_log(path: Path, recs: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Training / validation curves per bin (paper Fig. 7): critic Wasserstein estimate and Poisson NLL."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [r for r in _read_log(log_path) if r.get("kind") == "eval"]
    if not recs:
        return
    bins = sorted({r["bin"] for r in recs})
    fig, axes = plt.subplots(2, len(bins), figsize=(3.6 * len(bins), 6), squeeze=False)
    for c, b in enumerate(bins):
        rb = [r for r in recs if r["bin"] == b]
        steps = [r["step"] for r in rb]
        for row, key, label in ((0, "w", "Wasserstein estimate"), (1, "nll", "Poisson NLL")):
            ax = axes[row][c]
            plotted = False
            for split, style in (("train", "-"), ("val", "--")):
                vals = [r.get(f"{key}_{split}") for r in rb]
                if any(v is not None for v in vals):
                    ax.plot(steps, [np.nan if v is None else v for v in vals], style,
                            label="training" if split == "train" else "validation")
                    plotted = True
            ax.set_xlabel("generator step")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"mass bin {b}")
            if plotted:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no critic (supervised only)" if key == "w" else "—",
                        ha="center", va="center", transform=ax.transAxes, fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


# -------------------------------------------------------------------------------------------- driver

def train(cfg: TrainConfig, command: str = "", progress: bool = True) -> dict:
    """Run `halopaint train`: returns a summary dict (rank 0) with the final evaluation per bin."""
    from halopaint.ddp import GradientSync, init_distributed
    from halopaint.launch import configure_threads, discover, select_device

    info = discover()
    device = select_device(cfg.device, info.local_rank)
    configure_threads(info, device)
    if cfg.steps < 0 or cfg.checkpoint_every < 1 or cfg.n_critic < 1 or cfg.batch_size < 1:
        raise TrainingError("--steps must be ≥ 0, --checkpoint-every, n_critic and batch size ≥ 1")
    paths = TrainPaths.for_output(cfg.out)
    check_writable(paths.bundle)
    ghost = Generator().ghost_width
    data = load_data(cfg, ghost)
    init_bundle = ModelBundle.load(cfg.init_model) if cfg.init_model else None

    distributed = init_distributed(info, device)
    try:
        sync = GradientSync(distributed)
        trainer = Trainer(cfg, data, [info.rank], device, sync, init_bundle)
        trainer.command = command
        is_root = info.rank == 0
        resuming = cfg.resume and paths.checkpoint.exists()
        if init_bundle is not None and not resuming:       # a resume keeps the checkpoint's record
            trainer.init_record = init_provenance(cfg.init_model, init_bundle)
        if resuming:
            trainer.restore(load_checkpoint(paths.checkpoint), str(paths.checkpoint))
            if is_root:
                _rewrite_log(paths.log, _read_log(paths.log, trainer.step))
                print(f"halopaint train: resumed from {paths.checkpoint} at step {trainer.step}",
                      file=sys.stderr)
        elif cfg.resume and is_root:
            print(f"halopaint train: no checkpoint at {paths.checkpoint}; starting from step 0", file=sys.stderr)
        elif is_root and paths.log.exists():
            paths.log.unlink()
        summary = _loop(cfg, trainer, paths, command, is_root, progress)
        sync.barrier()
        return summary
    finally:
        if distributed:
            import torch.distributed as dist
            dist.destroy_process_group()


def _loop(cfg: TrainConfig, trainer: Trainer, paths: TrainPaths, command: str, is_root: bool,
          progress: bool) -> dict:
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=min(trainer.step, cfg.steps), file=sys.stderr, unit="it",
               disable=not (is_root and progress), dynamic_ncols=True)
    log = open(paths.log, "a") if is_root else None
    last_eval: dict = {}

    def evaluate_and_log():
        for bt in trainer.bins:
            ev = {"kind": "eval", "step": trainer.step, "bin": bt.bin, **bt.evaluate()}
            last_eval[bt.bin] = ev
            log.write(json.dumps(ev) + "\n")
        log.flush()

    def checkpoint():
        payload = trainer.checkpoint_payload()
        if is_root:
            save_checkpoint(payload, paths.checkpoint)
            trainer.bundle(command).save(paths.bundle)
            plot_losses(paths.log, paths.plot)

    last_checkpoint = -1
    try:
        while trainer.step < cfg.steps:
            recs = trainer.iteration()
            if is_root:
                for r in recs:
                    log.write(json.dumps({"kind": "train", **r}) + "\n")
                log.flush()
                if trainer.step % cfg.validate_every == 0 or trainer.step == cfg.steps:
                    evaluate_and_log()
                bar.set_postfix({f"b{r['bin']}": f"{r.get('wasserstein', r['poisson_nll']):.3g}" for r in recs})
            bar.update(1)
            if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps:
                checkpoint()
                last_checkpoint = trainer.step
        if last_checkpoint != trainer.step:   # nothing ran in this invocation: still write the outputs
            if is_root and trainer.bins[0].eval_sets:
                evaluate_and_log()
            checkpoint()
    finally:
        bar.close()
        if log is not None:
            log.close()
    return {"steps": trainer.step, "eval": last_eval, "bundle": str(paths.bundle)}
