"""halopaint: paint dark-matter halo fields from 2LPT density fields (Kodi Ramanah, Charnock & Lavaux 2019).

The package root holds the Python API (docs/api.md), imported lazily so that `import halopaint` and
`halopaint --help` stay cheap (no torch, MPI or Dask until a function is used):

    import halopaint
    sim = halopaint.simulate(grid=32, box_size=128.0, seed=7)           # dict of arrays
    halos = halopaint.paint_density(sim["density"], box_size=128.0)     # (n_bins, N, N, N) float32
    bundle = halopaint.load_model("default")

Subpackages: halopaint.sim (the embedded simulator), halopaint.kernels (inference kernels),
halopaint.analysis (Dask statistics); the CLI is `halopaint` (halopaint.cli).
"""

__version__ = "0.2.0"

_API = ("load_model", "paint_density", "simulate")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from halopaint import api
        return getattr(api, name)
    raise AttributeError(f"module 'halopaint' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
