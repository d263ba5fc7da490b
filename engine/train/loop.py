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

import contextlib
import json

from halopaint.config import TrainConfig
from halopaint.fields import check_writable
from halopaint.log import get_logger
from halopaint.log import progress as progress_bar
from halopaint.model import Generator, ModelBundle, resolve_model_path
from halopaint.train.checkpoint import TrainPaths, _read_log, _rewrite_log, load_checkpoint, plot_losses, \
    save_checkpoint
from halopaint.train.data import TrainingError, load_data
from halopaint.train.trainer import Trainer, init_provenance
from halopaint.validation import OutputLock, check_output_not_input, interruption_point, lock_path

log = get_logger(__name__)


def train(cfg: TrainConfig, command: str = "", progress: bool = True) -> dict:
    """Run `halopaint train`: returns a summary dict (rank 0) with the final evaluation per bin."""
    from halopaint.launch import configure_threads, discover, select_device

    info = discover()
    device = select_device(cfg.device, info.local_rank)
    configure_threads(info, device)
    if cfg.steps < 0 or cfg.checkpoint_every < 1 or cfg.n_critic < 1 or cfg.batch_size < 1:
        raise TrainingError("--steps must be ≥ 0, --checkpoint-every, n_critic and batch size ≥ 1")
    paths = TrainPaths.for_output(cfg.out)
    check_writable(paths.bundle)
    inputs = [*cfg.data, *cfg.validation] + ([str(resolve_model_path(cfg.init_model))] if cfg.init_model else [])
    check_output_not_input([paths.bundle, paths.checkpoint, paths.log, paths.plot, lock_path(paths.bundle)],
                           inputs)
    ghost = Generator().ghost_width
    data = load_data(cfg, ghost)
    init_bundle = ModelBundle.load(cfg.init_model) if cfg.init_model else None

    with contextlib.ExitStack() as held:
        if info.rank == 0:            # rank 0 writes every output: it holds the lock on the bundle
            held.enter_context(OutputLock(paths.bundle, "halopaint train"))
        return _train(cfg, command, progress, info, device, paths, data, init_bundle)


def _train(cfg: TrainConfig, command: str, progress: bool, info, device, paths: TrainPaths, data,
           init_bundle: ModelBundle | None) -> dict:
    from halopaint.ddp import GradientSync, init_distributed
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
                log.info(f"resumed from {paths.checkpoint} at step {trainer.step}")
        elif cfg.resume and is_root:
            log.info(f"no checkpoint at {paths.checkpoint}; starting from step 0")
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
    bar = progress_bar(total=cfg.steps, initial=min(trainer.step, cfg.steps), desc="train", unit="it") \
        if (is_root and progress) else _NoBar()
    log_file = open(paths.log, "a") if is_root else None
    last_eval: dict = {}

    def evaluate_and_log():
        for bt in trainer.bins:
            ev = {"kind": "eval", "step": trainer.step, "bin": bt.bin, **bt.evaluate()}
            last_eval[bt.bin] = ev
            log_file.write(json.dumps(ev) + "\n")
        log_file.flush()

    def checkpoint():
        payload = trainer.checkpoint_payload()
        if is_root:
            save_checkpoint(payload, paths.checkpoint)
            trainer.bundle(command, {"complete": trainer.step >= cfg.steps}).save(paths.bundle)
            plot_losses(paths.log, paths.plot)

    last_checkpoint = -1
    try:
        while trainer.step < cfg.steps:
            recs = trainer.iteration()
            if is_root:
                for r in recs:
                    log_file.write(json.dumps({"kind": "train", **r}) + "\n")
                log_file.flush()
                if trainer.step % cfg.validate_every == 0 or trainer.step == cfg.steps:
                    evaluate_and_log()
                bar.set_postfix_str(", ".join(f"b{r['bin']}={r.get('wasserstein', r['poisson_nll']):.3g}"
                                              for r in recs))
            bar.update(1)
            interruption_point("train", trainer.step, _rank_of(trainer))
            if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps:
                checkpoint()
                last_checkpoint = trainer.step
        if last_checkpoint != trainer.step:   # nothing ran in this invocation: still write the outputs
            if is_root and trainer.bins[0].eval_sets:
                evaluate_and_log()
            checkpoint()
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    return {"steps": trainer.step, "eval": last_eval, "bundle": str(paths.bundle)}


def _rank_of(trainer: Trainer) -> int:
    return trainer.streams[0] if trainer.streams else 0


class _NoBar:
    """No progress bar (other ranks, or progress=False)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "") -> None:
        pass

    def close(self) -> None:
        pass
