"""The per-bin generator/critic trainers and the round-robin Trainer (state, checkpoints payloads,
resume), plus the --init warm start."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import torch

import halopaint.kernels
from halopaint.config import TrainConfig
from halopaint.fields import file_sha256, same_voxel_size
from halopaint.model import BundleMetadata, Critic, Generator, InputNormalisation, ModelBundle, resolve_model_path
from halopaint.patches import PatchSampler
from halopaint.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from halopaint.train.data import TrainingData, TrainingError
from halopaint.train import fast
from halopaint.train.losses import poisson_nll


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
        # the generator forward of the steps (with gradients), of the critic steps (without), and the penalty:
        # the eager reference, or the fused path of halopaint.train.fast (same losses and gradients)
        self.path = fast.training_path(cfg.train_path, self.gen, device)
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

    def _critic_batches(self) -> list[list[tuple]]:
        """The patches of the n_critic critic steps, drawn in the order the steps use them (step, stream:
        density and halo patch, then ε), with the generator's output for each: the generator does not change
        during the critic steps, so its forwards can run up front (the fused path runs them as one batch)."""
        bs = self.cfg.batch_size
        drawn = [[(*s.draw(bs), s.uniform(bs)) for s in self.streams] for _ in range(self.cfg.n_critic)]
        fakes = iter(self.path.inference_many([self._input(d) for step in drawn for d, _, _ in step]))
        return [[(self._tensor(h), next(fakes), self._tensor(eps)) for _, h, eps in step] for step in drawn]

    def critic_step(self, sync, batch: list[tuple]) -> dict:
        """One critic update on `batch`: (real, fake, ε) per stream."""
        self.opt_c.zero_grad(set_to_none=True)
        n = len(self.streams)
        rec = {"critic_loss": 0.0, "wasserstein": 0.0, "gp": 0.0}
        for real, fake, eps in batch:
            w = self.path.wasserstein(self.critic, real, fake)
            gp = self.path.penalty(self.critic, real, fake, eps)
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
            fake = self.path.generator(self._input(d))
            nll = poisson_nll(fake, real)
            loss = self.cfg.supervised_weight * nll if self.cfg.supervised_weight > 0 else fake.sum() * 0
            if adversarial:
                loss = loss - self.cfg.adversarial_weight * self.path.critic_mean(self.critic, fake)
            loss.backward()
            rec["gen_loss"] += loss.item() / n
            rec["poisson_nll"] += nll.item() / n
        sync.average(self.gen.parameters(), n)
        self.opt_g.step()
        self.path.weights_changed()
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
            for batch in self._critic_batches():
                rec = self.critic_step(sync, batch)
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
        self.path.weights_changed()
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
