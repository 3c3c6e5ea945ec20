"""STFT front end: the one place that owns the transform constants.

Every other module asks this one for ``N_FFT``, ``HOP``, the window and the
transform itself, so the analysis and synthesis used in training, offline
enhancement and streaming are guaranteed to agree.
"""

from __future__ import annotations

import torch

SAMPLE_RATE: int = 16000
N_FFT: int = 512
HOP: int = 256
WIN_LENGTH: int = 512
N_FREQS: int = N_FFT // 2 + 1  # 257
FRAMES_PER_SECOND: float = SAMPLE_RATE / HOP  # 62.5


def window(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The analysis and synthesis window: sqrt(periodic Hann(512))."""
    return torch.hann_window(WIN_LENGTH, periodic=True, device=device, dtype=dtype).sqrt()


def stft(wav: torch.Tensor) -> torch.Tensor:
    """Waveform (B, N) -> spectrum (B, 257, T, 2) real/imag, centre padded (T = N // 256 + 1)."""
    spec = torch.stft(
        wav,
        N_FFT,
        HOP,
        WIN_LENGTH,
        window=window(wav.device, wav.dtype),
        center=True,
        return_complex=True,
    )  # (B, 257, T) complex
    return torch.view_as_real(spec)  # (B, 257, T, 2)


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Spectrum (B, 257, T, 2) -> waveform (B, length); inverse of :func:`stft`."""
    spec_c = torch.view_as_complex(spec.contiguous())  # (B, 257, T) complex
    return torch.istft(
        spec_c,
        N_FFT,
        HOP,
        WIN_LENGTH,
        window=window(spec.device, spec.dtype),
        center=True,
        length=length,
    )  # (B, length)


def num_frames(num_samples: int) -> int:
    """Number of STFT frames :func:`stft` gives for a signal of ``num_samples``."""
    return num_samples // HOP + 1
