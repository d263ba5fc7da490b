"""Logging and progress for every command: the standard `logging` module, one logger per module.

Modules call `log = get_logger(__name__)` and `log.info(...)`; nothing else prints diagnostics.
`configure(verbosity, rank, world)` is called once by the CLI (`--quiet` → warnings only, default →
info, `--verbose` → debug): records go to stderr as `halopaint <command>: message`, prefixed with
`[rank R/W]` under a multi-rank launcher, and only rank 0 logs below WARNING unless `--verbose` is given
(then every rank does). Library users get nothing until they configure logging themselves (a
`NullHandler` on the `halopaint` logger), as the logging HOWTO asks of libraries.

`progress(iterable, total=..., desc=...)` wraps tqdm: a bar on stderr when stderr is a terminal, on
rank 0 only, and not under `--quiet`; otherwise the iterable unchanged (no bar in logs or CI).
"""

from __future__ import annotations

import logging
import sys

ROOT = "halopaint"
QUIET, NORMAL, VERBOSE = -1, 0, 1

logging.getLogger(ROOT).addHandler(logging.NullHandler())

_state = {"progress": True}


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` under `halopaint.` (e.g. `halopaint.paint.driver`)."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class _RankFilter(logging.Filter):
    """Drop records below WARNING on ranks other than 0 (unless every rank is to log)."""

    def __init__(self, rank: int, all_ranks: bool):
        super().__init__()
        self.rank, self.all_ranks = rank, all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        return self.all_ranks or self.rank == 0 or record.levelno >= logging.WARNING


def configure(command: str, verbosity: int = NORMAL, rank: int = 0, world: int = 1,
              stream=None) -> logging.Logger:
    """Route `halopaint.*` records to stderr for one CLI command. Idempotent (replaces its own handler)."""
    stream = sys.stderr if stream is None else stream
    level = {QUIET: logging.WARNING, NORMAL: logging.INFO}.get(verbosity, logging.DEBUG)
    prefix = f"halopaint {command}: " + (f"[rank {rank}/{world}] " if world > 1 else "")
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if getattr(h, "_halopaint", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler._halopaint = True
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    handler.addFilter(_RankFilter(rank, verbosity >= VERBOSE))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _state["progress"] = verbosity > QUIET and rank == 0
    return root


def progress_enabled() -> bool:
    """Whether a progress bar would be shown now (terminal on stderr, rank 0, not --quiet)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(_state["progress"] and isatty is not None and isatty())


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0):
    """tqdm over `iterable` (or a manual bar with `.update(n)` when iterable is None) where a bar is
    wanted, else a silent stand-in with the same `update`/`close`/context-manager interface."""
    if progress_enabled():
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                    dynamic_ncols=True, leave=False)
    return _Silent(iterable)


class _Silent:
    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it if self._it is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
