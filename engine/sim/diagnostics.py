"""Small diagnostics for the simulator's own checks (tests, bench, figures).

`power_spectrum` follows docs/formats.md / Pylians: P = V |FFT|² / N⁶, linear bins of width k_F on integer
|n| (bin i = [i, i+1)·k_F), DC dropped, k = mode-averaged |k|, every rfft mode counted with its
Hermitian twin (weight 2 for 0 < n_z < N/2). No mass-assignment compensation, no shot-noise removal.
"""

from __future__ import annotations

import numpy as np
import torch


def power_spectrum(field_k: np.ndarray | torch.Tensor, box_size: float, n: int | None = None):
    """Binned P(k) of an rfft-layout spectrum (n, n, n//2+1) in the numpy DFT convention, or of a real
    (n, n, n) field (transformed here). → k [h/Mpc], P [(Mpc/h)³], modes per bin (all (n//2,) arrays)."""
    a = torch.as_tensor(field_k)
    if not a.is_complex():
        n = a.shape[0]
        a = torch.fft.rfftn(a.to(torch.float64))
    n = a.shape[0] if n is None else n
    p = (a.abs().to(torch.float64) ** 2).numpy() * box_size**3 / float(n) ** 6
    ix = np.fft.fftfreq(n, 1.0 / n)
    iz = np.arange(n // 2 + 1)
    nmag = np.sqrt(ix[:, None, None] ** 2 + ix[None, :, None] ** 2 + iz[None, None, :] ** 2)
    weight = np.where((iz == 0) | (2 * iz == n), 1.0, 2.0)[None, None, :] * np.ones_like(nmag)
    b = np.floor(nmag).astype(np.int64)
    nb = n // 2
    sel = (b >= 1) & (b < nb)
    counts = np.bincount(b[sel], weights=weight[sel], minlength=nb)
    psum = np.bincount(b[sel], weights=(weight * p)[sel], minlength=nb)
    ksum = np.bincount(b[sel], weights=(weight * nmag)[sel], minlength=nb)
    good = counts > 0
    kf = 2.0 * np.pi / box_size
    return (kf * ksum[good] / counts[good], psum[good] / counts[good], counts[good])
