"""The HDF5 field contract (engine/fields.py): atomic writes, refusal of incomplete/invalid files, slabs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from halopaint.config import Cosmology
from halopaint.fields import (FieldFile, FieldFileError, atomic_h5, read_info, standard_attrs, temporary_path,
                           write_field)


def _attrs(**extra):
    return standard_attrs(64.0, 0.0, Cosmology(), mass_bin_edges=[1e12, 1e13, 1e14], seed=3, **extra)


def _fields(n=8, nb=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n, n)).astype(np.float32), rng.random((nb, n, n, n)).astype(np.float32)


def test_write_read_roundtrip_and_slabs(tmp_path):
    rho, halos = _fields()
    path = tmp_path / "f.h5"
    write_field(path, _attrs(), density=rho, halos=halos)
    assert not temporary_path(path).exists()
    with FieldFile(path, require=("density", "halos")) as f:
        assert f.info.grid == 8 and f.info.n_bins == 2 and f.info.box_size == 64.0
        assert f.info.voxel_size == 8.0
        np.testing.assert_array_equal(f.read_density(), rho)
        np.testing.assert_array_equal(f.read_density(2, 5), rho[2:5])
        np.testing.assert_array_equal(f.read_halos(), halos)
        np.testing.assert_array_equal(f.read_halos([1], 3, 8), halos[1:2, 3:8])
        with pytest.raises(FieldFileError, match="outside the grid"):
            f.read_density(5, 9)
        with pytest.raises(FieldFileError, match="mass bin 2"):
            f.read_halos([2])
    assert read_info(path).attrs["seed"] == 3


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(RuntimeError):
        with atomic_h5(path, _attrs()) as f:
            f.create_dataset("density", data=np.ones((4, 4, 4), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_refused(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        for k, v in _attrs().items():
            f.attrs[k] = v
        f.create_dataset("density", data=np.ones((4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match="incomplete"):
        FieldFile(path)


@pytest.mark.parametrize("attr", ["box_size", "redshift", "cosmology", "halopaint_version", "created"])
def test_missing_attribute_refused(tmp_path, attr):
    path = tmp_path / "f.h5"
    attrs = _attrs()
    del attrs[attr]
    write_field(path, attrs, density=np.ones((4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match=attr):
        read_info(path)


def test_missing_dataset_and_edges_refused(tmp_path):
    path = tmp_path / "f.h5"
    write_field(path, _attrs(), density=np.ones((4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match="/halos"):
        read_info(path, require=("halos",))
    with FieldFile(path) as f, pytest.raises(FieldFileError, match="/halos"):
        f.read_halos()
    attrs = _attrs()
    del attrs["mass_bin_edges"]
    write_field(tmp_path / "g.h5", attrs, halos=np.ones((2, 4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match="mass_bin_edges"):
        read_info(tmp_path / "g.h5")


def test_bad_shapes_and_missing_file_refused(tmp_path):
    write_field(tmp_path / "a.h5", _attrs(), density=np.ones((4, 4, 5), np.float32))
    with pytest.raises(FieldFileError, match=r"\(N, N, N\)"):
        read_info(tmp_path / "a.h5")
    write_field(tmp_path / "b.h5", _attrs(), density=np.ones((4, 4, 4), np.float32),
                halos=np.ones((2, 8, 8, 8), np.float32))
    with pytest.raises(FieldFileError, match="differs"):
        read_info(tmp_path / "b.h5")
    write_field(tmp_path / "c.h5", _attrs(), halos=np.ones((3, 4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match="3 bins"):
        read_info(tmp_path / "c.h5")
    with pytest.raises(FieldFileError, match="no such file"):
        read_info(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(FieldFileError, match="not a readable HDF5"):
        read_info(tmp_path / "junk.h5")


def test_unwritable_destination_refused(tmp_path):
    with pytest.raises(FieldFileError, match="does not exist"):
        write_field(tmp_path / "nodir" / "f.h5", _attrs(), density=np.ones((4, 4, 4), np.float32))
    with pytest.raises(FieldFileError, match="is a directory"):
        write_field(tmp_path, _attrs(), density=np.ones((4, 4, 4), np.float32))
