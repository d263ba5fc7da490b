#!/usr/bin/env python
"""`halopaint spectra` on Dask workers submitted as SLURM jobs (dask-jobqueue).

    python jobs/dask_slurm.py --jobs 4 --cores 16 --memory 64GiB --walltime 01:00:00 \\
        [--queue QUEUE] [--account ACCOUNT] [--job-extra "--constraint=cpu"] [--dry-run] \\
        -- PRED.h5 --reference TRUE.h5 --density DENS.h5 --out DIR [--patches 1000 ...]

Run it on a login node (or inside a small allocation): it starts a Dask scheduler here, submits `--jobs`
SLURM jobs of one worker process each (`--cores` threads, `--memory`), waits for the first worker,
then runs `halopaint spectra ARGS --scheduler <this scheduler>`. `--dry-run` prints the worker job
script and exits. Needs: pip install 'halopaint[cluster]' (dask-jobqueue). Input files (and
`--spill-dir`) must be on a file system the compute nodes see.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="SLURM worker jobs")
    ap.add_argument("--cores", type=int, default=8, help="threads per worker job")
    ap.add_argument("--memory", default="32GiB", help="memory per worker job")
    ap.add_argument("--walltime", default="01:00:00")
    ap.add_argument("--queue", default=None, help="SLURM partition")
    ap.add_argument("--account", default=None)
    ap.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH directive (repeatable)")
    ap.add_argument("--local-directory", default="$TMPDIR", help="worker scratch for spilling")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the first worker")
    ap.add_argument("--dry-run", action="store_true", help="print the worker job script and exit")
    ap.add_argument("spectra_args", nargs=argparse.REMAINDER, help="-- then the `halopaint spectra` arguments")
    args = ap.parse_args()
    rest = args.spectra_args[1:] if args.spectra_args[:1] == ["--"] else args.spectra_args

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=args.cores, processes=1, memory=args.memory, walltime=args.walltime,
                           queue=args.queue, account=args.account, job_extra_directives=args.job_extra,
                           local_directory=args.local_directory, scheduler_options={"dashboard_address": None})
    try:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        if not rest:
            ap.error("no `halopaint spectra` arguments given after --")
        from distributed import Client
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=args.timeout)
            from halopaint.cli import main as cli
            try:
                return cli(["spectra", *rest, "--scheduler", cluster.scheduler_address])
            except SystemExit as exc:
                return int(exc.code or 0)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
