"""Integer Fourier modes and wavenumber grids of periodic N³ boxes (foundation layer: numpy only).

Layout: the `numpy.fft.rfftn` layout of a real (N, N, N) field, (N, N, N//2+1) complex, axes (x, y, z).
Two conventions exist for the Nyquist index N/2 of the full axes (N even); both are kept exactly:

- `nyquist="negative"` (numpy `fftfreq`): index N/2 → −N/2. The simulator's white noise and 2LPT use it.
- `nyquist="positive"` (Pylians): index N/2 → +N/2. The analysis package's spectra and bispectra use it.

The half axis (last, rfft) is always 0 … N//2.
"""

from __future__ import annotations

import numpy as np

__all__ = ["integer_modes", "wavenumbers", "k_axes"]


def integer_modes(n: int, nyquist: str = "negative") -> tuple[np.ndarray, np.ndarray]:
    """Signed integer wavevector components of an n-point axis in fft order (n,) and of the rfft
    half-axis (n//2+1,), both int64. `nyquist`: "negative" (numpy fftfreq) or "positive" (Pylians)."""
    if nyquist == "negative":
        full = np.fft.fftfreq(n, d=1.0 / n).round().astype(np.int64)
    elif nyquist == "positive":
        full = np.arange(n, dtype=np.int64)
        full = np.where(full > n // 2, full - n, full)
    else:
        raise ValueError(f"nyquist must be 'negative' or 'positive', got {nyquist!r}")
    return full, np.arange(n // 2 + 1, dtype=np.int64)


def wavenumbers(n: int, box_size: float, real_last: bool = False) -> np.ndarray:
    """Angular wavenumbers 2π·fftfreq(n)·n/L [h/Mpc] of an n-point periodic axis of length box_size
    [Mpc/h]: (n,) float64 in fft order (Nyquist negative), or (n//2+1,) for the rfft half-axis."""
    k = np.fft.rfftfreq(n) if real_last else np.fft.fftfreq(n)
    return 2.0 * np.pi * n / box_size * k


def k_axes(n: int, box_size: float, dtype=np.float32, y_range: tuple[int, int] | None = None):
    """Broadcastable wavenumber axes of the rfft layout [h/Mpc]: kx (n, 1, 1), ky (1, ny, 1),
    kz (1, 1, n//2+1), cast to `dtype`. y_range=(y0, y1) keeps only the ky rows [y0, y1) (a y-slab)."""
    full = wavenumbers(n, box_size).astype(dtype)
    y0, y1 = (0, n) if y_range is None else y_range
    return (full.reshape(n, 1, 1), full[y0:y1].reshape(1, y1 - y0, 1),
            wavenumbers(n, box_size, real_last=True).astype(dtype).reshape(1, 1, n // 2 + 1))
