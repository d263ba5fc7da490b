"""Tiny hostile input files for the bad-input suite (tests/test_bad_input.py), made once per session.

Every file is a few hundred KiB at most: 28³ grids (the smallest paintable size is 25), 1 mass bin.
`make_inputs(d)` writes them all into directory d and returns {name: path}.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import torch

from conftest import lognormal_density, random_bundle, write_density_file
from halopaint.config import Cosmology, DensityRecipe
from halopaint.fields import standard_attrs, write_field
from train_data import write_training_file

N = 28            # grid of the tiny files (voxel 4 Mpc/h, the random bundle's)
EDGES = [1e12, 1e14]


def _painted(path, halos, cosmology: Cosmology | None = None, redshift: float = 0.0, box: float = 4.0 * N):
    attrs = standard_attrs(box, redshift, cosmology or Cosmology(), mass_bin_edges=EDGES, seed=1)
    write_field(path, attrs, halos=halos)
    return str(path)


def _raw(path, attrs: dict, datasets: dict, groups=()):
    """An HDF5 file written as given (no validation, no atomic rename): for files that break the contract."""
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for g in groups:
            f.create_group(g)
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return str(path)


def _good_attrs(**over):
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(), seed=0, density_recipe=DensityRecipe().to_json())
    attrs["complete"] = True
    attrs.update(over)
    return attrs


class _Evil:
    """Pickled code: unpickling it would run os.system."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/halopaint-pwned",))


def make_inputs(d) -> dict[str, str]:
    d = str(d)
    p = lambda name: os.path.join(d, name)  # noqa: E731
    out: dict[str, str] = {}
    random_bundle(n_bins=1, seed=3).save(p("model.pt"))
    out["model"] = p("model.pt")
    rho = lognormal_density(N, 4)
    out["dens"] = write_density_file(p("dens.h5"), n=N, seed=4)
    out["dens2"] = write_density_file(p("dens2.h5"), n=N + 2, seed=5)
    # --- attrs
    out["complete_str"] = _raw(p("complete_str.h5"), _good_attrs(complete="False"), {"density": rho})
    out["complete_int"] = _raw(p("complete_int.h5"), _good_attrs(complete=1), {"density": rho})
    out["complete_false"] = _raw(p("complete_false.h5"), _good_attrs(complete=False), {"density": rho})
    attrs = _good_attrs()
    del attrs["complete"]
    out["no_complete"] = _raw(p("no_complete.h5"), attrs, {"density": rho})
    out["box_array"] = _raw(p("box_array.h5"), _good_attrs(box_size=np.array([112.0, 112.0])), {"density": rho})
    out["box_negative"] = _raw(p("box_negative.h5"), _good_attrs(box_size=-112.0), {"density": rho})
    out["box_string"] = _raw(p("box_string.h5"), _good_attrs(box_size="112"), {"density": rho})
    out["box_nan"] = _raw(p("box_nan.h5"), _good_attrs(box_size=np.nan), {"density": rho})
    out["redshift_negative"] = _raw(p("redshift_negative.h5"), _good_attrs(redshift=-2.0), {"density": rho})
    out["cosmo_json"] = _raw(p("cosmo_json.h5"), _good_attrs(cosmology="{not json"), {"density": rho})
    out["cosmo_negative"] = _raw(p("cosmo_negative.h5"), _good_attrs(
        cosmology=json.dumps(dict(Omega_m=-0.3, Omega_b=0.049, h=0.68, sigma8=0.81, n_s=0.97))), {"density": rho})
    attrs = _good_attrs()
    del attrs["box_size"]
    out["no_box"] = _raw(p("no_box.h5"), attrs, {"density": rho})
    # --- datasets
    out["density_group"] = _raw(p("density_group.h5"), _good_attrs(), {}, groups=("density",))
    out["density_2d"] = _raw(p("density_2d.h5"), _good_attrs(), {"density": rho[0]})
    out["density_noncubic"] = _raw(p("density_noncubic.h5"), _good_attrs(), {"density": rho[:, :, :20]})
    out["density_strings"] = _raw(p("density_strings.h5"), _good_attrs(),
                                  {"density": np.array([b"a", b"b"], dtype="S1").reshape(1, 1, 2)})
    out["density_empty"] = _raw(p("density_empty.h5"), _good_attrs(), {"density": np.zeros((0, 0, 0), np.float32)})
    # --- values
    for name, edit in (("nan", lambda r: r.__setitem__((1, 2, 3), np.nan)),
                       ("inf", lambda r: r.__setitem__((1, 2, 3), np.inf)),
                       ("negative", lambda r: r.__setitem__((5, 5, 5), -0.5)),
                       ("huge", lambda r: r.__setitem__((5, 5, 5), 1e30)),
                       ("zero", lambda r: r.__imul__(0)),
                       ("mean10", lambda r: r.__imul__(10))):
        r = rho.copy()
        edit(r)
        out[f"dens_{name}"] = write_density_file(p(f"dens_{name}.h5"), n=N, density=r)
    # --- mismatches with the model (voxel 4 Mpc/h, z = 0, default cosmology)
    out["dens_voxel"] = write_density_file(p("dens_voxel.h5"), n=N, box_size=2.0 * N, seed=4)
    out["dens_z1"] = write_density_file(p("dens_z1.h5"), n=N, redshift=1.0, seed=4)
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(Omega_m=0.25, sigma8=0.9), seed=0,
                           density_recipe=DensityRecipe().to_json())
    write_field(p("dens_cosmo.h5"), attrs, density=rho)
    out["dens_cosmo"] = p("dens_cosmo.h5")
    # --- broken files
    with open(p("truncated.h5"), "wb") as f, open(out["dens"], "rb") as g:
        f.write(g.read()[:3000])
    out["truncated"] = p("truncated.h5")
    open(p("empty.h5"), "wb").close()
    out["empty"] = p("empty.h5")
    with open(p("text.h5"), "w") as f:
        f.write("this is not HDF5\n")
    out["text"] = p("text.h5")
    out["missing"] = p("does-not-exist.h5")
    torch.save({"format": "halopaint-model-bundle", "evil": _Evil()}, p("evil.pt"))
    out["evil_model"] = p("evil.pt")
    # --- painted fields (/halos, 1 bin)
    halos = (0.3 * rho[None]).astype(np.float32)
    out["painted"] = _painted(p("painted.h5"), halos)
    out["painted_z05"] = _painted(p("painted_z05.h5"), halos, redshift=0.5)
    h = halos.copy()
    h[0, 3, 3, 3] = -2.0
    out["painted_negative"] = _painted(p("painted_negative.h5"), h)
    h = halos.copy()
    h[0, 3, 3, 3] = np.nan
    out["painted_nan"] = _painted(p("painted_nan.h5"), h)
    out["painted_small"] = _painted(p("painted_small.h5"), halos[:, :20, :20, :20], box=80.0)
    out["painted_edges"] = _raw(p("painted_edges.h5"), dict(_good_attrs(), mass_bin_edges=np.array([1e14, 1e12])),
                                {"halos": halos})
    out["painted_cosmo_negative"] = _raw(p("painted_cosmo_negative.h5"), dict(
        _good_attrs(cosmology=json.dumps(dict(Omega_m=-0.3, Omega_b=0.049, h=0.68, sigma8=0.81, n_s=0.97))),
        mass_bin_edges=np.array(EDGES)), {"halos": halos})
    # --- training files (/density + /halos)
    out["train"] = write_training_file(p("train.h5"), n=N, seed=1, n_bins=1)
    out["train_voxel"] = write_training_file(p("train_voxel.h5"), n=N, seed=2, n_bins=1, voxel=2.0)
    for name, value in (("nan", np.nan), ("negative", -1.0)):
        with h5py.File(out["train"], "r") as f:
            attrs = dict(f.attrs)
            rho_t, h_t = f["density"][...], f["halos"][...]
        h_t = h_t.copy()
        h_t[0, 2, 2, 2] = value
        out[f"train_halos_{name}"] = _raw(p(f"train_halos_{name}.h5"), attrs, {"density": rho_t, "halos": h_t})
    r = rho_t.copy()
    r[0, 0, 0] = np.nan
    out["train_density_nan"] = _raw(p("train_density_nan.h5"), attrs, {"density": r, "halos": h_t * 0})
    return out
