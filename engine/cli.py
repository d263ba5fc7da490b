"""`halopaint` — the one entry point.

Each subcommand lives in `engine/commands/<name>.py` and provides
`add_arguments(parser)` and `run(args) -> int`. They are imported lazily, so `halopaint --help`
and one subcommand never pay for the others' imports (torch, dask, MPI).

Errors: a `HalopaintError` (or a bad value in the arguments) becomes one line on stderr,
`halopaint <cmd>: error: <message>`, and exit code 2. Under a multi-rank launcher an error that only
one rank saw aborts the whole job (MPI Abort) so no rank is left hanging; errors every rank agreed on
(`exc.collective = True`) are reported once by rank 0 and every rank exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "simulate": "Simulate a box: Gaussian ICs → 2LPT density (+ PM N-body → FoF halo counts).",
    "train": "Train the paper's WGAN-GP painter, one generator per mass bin (DDP-ready).",
    "paint": "Paint halo count fields from a 2LPT density file with a model bundle (MPI).",
    "sample": "Integer halo realizations (and catalogues) of a painted field, from the count model (MPI).",
    "spectra": "Spectra, cross statistics, bispectra and PDFs of painted fields (Dask).",
    "lightcone": "HEALPix shells and a halo catalogue from painted boxes (MPI).",
    "demo": "The main job on the embedded default: simulate, paint on MPI ranks, analyse, plot.",
}

EXIT_USAGE = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halopaint",
        description="Paint dark-matter halo count fields from 2LPT density fields "
                    "(Kodi Ramanah, Charnock & Lavaux 2019) at survey scale.")
    from halopaint import __version__
    parser.add_argument("--version", action="version", version=f"halopaint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary, parents=[_verbosity_parser()])
        if name == only:
            _module(name).add_arguments(p)
    return parser


def _verbosity_parser() -> argparse.ArgumentParser:
    """--quiet / --verbose, shared by every command (see halopaint.log)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only; no progress bars")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="debug records, from every rank under MPI")
    return parent


def _configure_logging(args) -> None:
    from halopaint.launch import discover
    from halopaint.log import NORMAL, QUIET, VERBOSE, configure
    info = discover()
    verbosity = QUIET if args.quiet else VERBOSE if args.verbose else NORMAL
    configure(args.command, verbosity, rank=info.rank, world=info.world_size)


def _module(name: str):
    return importlib.import_module(f"halopaint.commands.{name}")


def _report(command: str, message: str) -> None:
    line = " ".join(str(message).split())
    print(f"halopaint {command}: error: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen subcommand's module is imported (cheap --help, no unneeded imports).
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    from halopaint.errors import HalopaintError
    _configure_logging(args)
    previous = _terminate_as_interrupt()
    try:
        from halopaint.allocator import tune_malloc
        tune_malloc()                       # freed sub-tile buffers stay mapped (engine/allocator.py)
        return int(_module(args.command).run(args) or 0)
    except (HalopaintError, ValueError) as exc:
        _fail(args.command, exc)
    except KeyboardInterrupt as exc:
        name = exc.args[0] if exc.args else "SIGINT"
        _fail(args.command, f"interrupted by {name}; nothing was marked complete (paint and train: rerun with "
                            "--resume to continue)")
    except MemoryError:
        _fail(args.command, "out of memory; use a smaller grid, fewer bins, or a smaller --max-memory/--nside")
    finally:
        _restore_terminate(previous)
    return EXIT_USAGE


def _terminate_as_interrupt():
    """SIGTERM (what schedulers and `kill` send) unwinds like Ctrl-C: writers remove their temporary files,
    locks are released and the CLI reports one line, instead of dying with half-written temporaries."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        return signal.signal(signal.SIGTERM, handler)   # the previous handler, restored when main returns
    except ValueError:                      # not the main thread (embedded use): leave the default
        return None


def _restore_terminate(previous) -> None:
    import signal
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass


def _fail(command: str, exc) -> None:
    """Report and exit non-zero on every rank, without leaving other ranks hanging."""
    from halopaint.launch import abort_job, discover
    info = discover()
    collective = bool(getattr(exc, "collective", False))
    if not info.is_distributed:
        _report(command, exc)
        sys.exit(EXIT_USAGE)
    if collective:
        if info.rank == 0:
            _report(command, exc)
        sys.exit(EXIT_USAGE)
    _report(command, f"[rank {info.rank}] {exc}")
    if "mpi4py.MPI" in sys.modules:
        abort_job(sys.modules["mpi4py.MPI"].COMM_WORLD, EXIT_USAGE)
    sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
