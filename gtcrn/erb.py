"""ERB filterbank: fold the upper STFT bins into ERB-spaced bands and back.

The lowest ``low`` bins are kept as they are; the remaining ``257 - low`` bins
are mapped to ``bands`` bands by triangular filters whose centres are equally
spaced on the ERB-rate scale (Glasberg & Moore: ERB(f) = 21.4 log10(1 + 0.00437 f)).
Analysis ``bm`` weights each band's bins (``y = W x`` with W the (bands, bins)
filter matrix); synthesis ``bs`` uses the transposed matrix (``x' = Wᵀ y``), so a
bin receives the weighted values of the bands it belongs to.

What ``bs`` and ``bm`` guarantee:

* every upper bin's weights sum to 1 over the bands (a partition of unity), so
  ``bs`` of a band-constant mask is the same constant on every bin: a mask
  that does not vary across bands passes through synthesis unchanged;
* the low bins pass through both directions untouched;
* ``bs(bm(x)) = Wᵀ W x`` is a symmetric smoothing: an impulse at one upper bin
  spreads only over the bins of the bands that contain it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .stft import N_FFT, N_FREQS, SAMPLE_RATE


def hz_to_erb(freq_hz: np.ndarray | float) -> np.ndarray:
    """Frequency in Hz -> ERB-rate."""
    return 21.4 * np.log10(0.00437 * np.asarray(freq_hz, dtype=np.float64) + 1.0)


def erb_to_hz(erb: np.ndarray | float) -> np.ndarray:
    """ERB-rate -> frequency in Hz (inverse of :func:`hz_to_erb`)."""
    return (10.0 ** (np.asarray(erb, dtype=np.float64) / 21.4) - 1.0) / 0.00437


def erb_filters(low: int, bands: int, high_hz: float = 8000.0, n_fft: int = N_FFT,
                sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular ERB filters as a (bands, n_fft // 2 + 1 - low) float32 matrix.

    Band edges are ``bands`` points equally spaced in ERB-rate between the
    frequency of bin ``low`` and ``high_hz``, rounded to STFT bins. Band ``i``
    rises from edge ``i - 1`` to edge ``i`` and falls to edge ``i + 1``; the
    first band is flat-topped at the bottom and the last band takes whatever
    the second-to-last leaves, up to and including its top edge, so that every
    column sums to one.
    """
    n_bins = n_fft // 2 + 1
    edges_erb = np.linspace(hz_to_erb(low / n_fft * sample_rate), hz_to_erb(high_hz), bands)
    edges = np.round(erb_to_hz(edges_erb) / sample_rate * n_fft).astype(np.int64)
    w = np.zeros((bands, n_bins), dtype=np.float64)
    eps = 1e-12

    def rising(a: int, b: int) -> np.ndarray:
        k = np.arange(a, b)
        return (k - a + eps) / (b - a + eps)

    def falling(a: int, b: int) -> np.ndarray:
        k = np.arange(a, b)
        return (b - k + eps) / (b - a + eps)

    w[0, edges[0]:edges[1]] = falling(edges[0], edges[1])
    for i in range(1, bands - 1):
        w[i, edges[i - 1]:edges[i]] = rising(edges[i - 1], edges[i])
        w[i, edges[i]:edges[i + 1]] = falling(edges[i], edges[i + 1])
    w[-1, edges[-2]:edges[-1] + 1] = 1.0 - w[-2, edges[-2]:edges[-1] + 1]
    return torch.from_numpy(np.abs(w[:, low:]).astype(np.float32))  # (bands, n_bins - low)


class ERB(nn.Module):
    """ERB analysis ``bm`` (257 bins -> low + bands) and synthesis ``bs`` (back to 257).

    The matrices are fixed (not trained). They are stored as non-trainable
    parameters so that they count in the total parameter figure and appear in
    state dicts, as in the published model.
    """

    def __init__(self, low: int, bands: int, high_hz: float = 8000.0) -> None:
        super().__init__()
        self.low = low
        self.bands = bands
        w = erb_filters(low, bands, high_hz)  # (bands, 257 - low)
        self.erb_fc = nn.Linear(N_FREQS - low, bands, bias=False)
        self.ierb_fc = nn.Linear(bands, N_FREQS - low, bias=False)
        self.erb_fc.weight = nn.Parameter(w, requires_grad=False)  # (bands, 257 - low)
        self.ierb_fc.weight = nn.Parameter(w.T.contiguous(), requires_grad=False)  # (257 - low, bands)

    @property
    def num_bins(self) -> int:
        return self.low + self.bands

    def bm(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 257) -> (..., low + bands)."""
        return torch.cat([x[..., : self.low], self.erb_fc(x[..., self.low:])], dim=-1)

    def bs(self, x: torch.Tensor) -> torch.Tensor:
        """(..., low + bands) -> (..., 257)."""
        return torch.cat([x[..., : self.low], self.ierb_fc(x[..., self.low:])], dim=-1)
