"""halopaint analysis: Dask statistics of painted halo fields in Pylians' conventions.

Notebook API (numpy or Dask (N, N, N) arrays; box_size [Mpc/h], k [h/Mpc]):
- `power_spectrum(delta, box_size, other=None, mas=None)` → PowerSpectrum(k, power, nmodes)
- `cross_statistics(pred, ref, box_size, mas=None)` → CrossStatistics(k, T, r_c, s, P_pp, P_hh, P_hp, …)
- `bispectrum(delta, box_size, k1, k2, thetas, mas=None)` → Bispectrum(B, Q, k3, …)
- `multipoles(delta, box_size, axis=2, mas=None)` → Multipoles(k, P0, P2, P4, nmodes); redshift space:
  `redshift_space_positions(pos, vel, box_size, redshift, omega_m)`, `catalogue_multipoles(pos, vel, …)`
- `count_pdf(pred_counts, true_counts)` → CountPDF(pdf_pred, pdf_true, conditional, frac_off_by_3, …)
- `lpt_baseline(k, nmodes, P_hh, P_mm, P_hm, kmax=0.1)` → Baseline(bias, stats)
- `patch_ensemble(...)` → Ensemble(mean, std) over random periodic sub-cubes
- `rfftn` / `irfftn` / `field_from_h5`: the slab-decomposed distributed FFT and lazy HDF5 fields
- `rsd.measure(pred, ref, grid, axis, mass_bin_edges)` → {selection: rsd.Selection} of halo catalogues
  (`rsd.read_catalogue(path)`), real and redshift space, with the pred/ref ratios
- `report.run(SpectraConfig)`: everything `halopaint spectra` does; `rsd_report.run(MultipolesConfig)`:
  everything `halopaint spectra --multipoles` does.
"""

from halopaint.analysis.baseline import Baseline, fit_linear_bias, lpt_baseline
from halopaint.analysis.bispectrum import Bispectrum, bispectrum
from halopaint.analysis.ensemble import Ensemble, PatchSource, patch_ensemble
from halopaint.analysis.fft import field_from_h5, irfftn, rfftn
from halopaint.analysis.multipoles import Multipoles, catalogue_multipoles, multipoles, redshift_space_positions
from halopaint.analysis.pdf import CountPDF, count_pdf
from halopaint.analysis import report  # noqa: E402  (halopaint.analysis.report.run: the whole `halopaint spectra`)
from halopaint.analysis import rsd, rsd_report  # noqa: E402  (rsd_report.run: `halopaint spectra --multipoles`)
from halopaint.analysis.spectra import (CrossStatistics, PowerSpectrum, cross_from_spectra, cross_statistics,
                              poisson_level, power_spectrum)

__all__ = ["report", "rsd", "rsd_report", "power_spectrum", "cross_statistics", "cross_from_spectra", "poisson_level", "bispectrum",
           "count_pdf", "multipoles", "catalogue_multipoles", "redshift_space_positions", "Multipoles",
           "lpt_baseline", "fit_linear_bias", "patch_ensemble", "PatchSource", "rfftn", "irfftn",
           "field_from_h5", "PowerSpectrum", "CrossStatistics", "Bispectrum", "CountPDF", "Baseline", "Ensemble"]
