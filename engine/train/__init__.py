"""WGAN-GP training (`halopaint train`), as a package along the jobs it does:

- `losses`:     gradient penalty, Poisson NLL;
- `data`:       TrainingError, TrainingData, reading and cross-checking the field files;
- `trainer`:    BinTrainer / Trainer (one generator per mass bin, DDP gradient sync), --init warm start;
- `checkpoint`: TrainPaths, the atomic checkpoint, the loss log and plot;
- `loop`:       the driver `train` and its step loop.

The names other modules and tests import from `halopaint.train` are re-exported here.
"""

from halopaint.train.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainPaths, load_checkpoint,
                                        plot_losses, save_checkpoint)
from halopaint.train.data import MIN_CRITIC_PATCH, TrainingData, TrainingError, load_data
from halopaint.train.loop import train
from halopaint.train.losses import gradient_penalty, poisson_nll
from halopaint.train.trainer import BinTrainer, Trainer, init_provenance

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "MIN_CRITIC_PATCH", "BinTrainer", "TrainPaths", "Trainer",
    "TrainingData", "TrainingError", "gradient_penalty", "init_provenance", "load_checkpoint", "load_data",
    "plot_losses", "poisson_nll", "save_checkpoint", "train",
]
