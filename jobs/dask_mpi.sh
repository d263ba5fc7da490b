#!/usr/bin/env bash
# `halopaint spectra` on a Dask cluster made of the ranks of one MPI job (dask-mpi).
#
#   mpiexec -n R bash jobs/dask_mpi.sh PRED.h5 --reference TRUE.h5 [--density DENS.h5] --out DIR [...]
#   srun -n R bash jobs/dask_mpi.sh ...          (inside an sbatch allocation)
#
# Rank 0 runs the Dask scheduler, rank 1 runs `halopaint spectra` as the client, ranks 2 … R−1 are workers
# (R ≥ 3). All arguments go to `halopaint spectra` (do not pass --scheduler: the client connects itself).
# Environment: DASK_MPI_THREADS threads per worker (default 1), DASK_MPI_MEMORY memory limit per worker
# (default auto), DASK_MPI_DIR worker scratch directory for spilling (default $TMPDIR or /tmp).
# Needs: pip install 'halopaint[cluster]' (dask-mpi). Input files (and --spill-dir if used) must be on a
# file system every rank sees. Exit code: the client's (2 on bad input, with a one-line error).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec python - "$@" <<'PY'
import os
import sys

from dask_mpi import initialize

initialize(nthreads=int(os.environ.get("DASK_MPI_THREADS", "1")),
           memory_limit=os.environ.get("DASK_MPI_MEMORY", "auto"),
           local_directory=os.environ.get("DASK_MPI_DIR", os.environ.get("TMPDIR", "/tmp")),
           dashboard=False)
# only rank 1 gets here: a distributed Client is now the default scheduler of every dask.compute
from distributed import Client  # noqa: E402

client = Client()
from halopaint.cli import main  # noqa: E402

try:
    code = main(["spectra", *sys.argv[1:]])
except SystemExit as exc:  # the CLI reports errors as one line and exits 2
    code = exc.code
finally:
    client.close()
sys.exit(code)
PY
