"""GTCRN's hybrid training loss.

    loss = ri_weight  * [MSE(Re Sc_est, Re Sc_ref) + MSE(Im Sc_est, Im Sc_ref)]
         + mag_weight * MSE(|S_est|^c, |S_ref|^c)
         + sisnr_weight * (-SI-SNR(est_wav, ref_wav) in dB / 10)
         + level_weight * mean((speech gain in dB / 10)^2)

with the power-law compressed spectrum ``Sc = S / |S|^(1 - c) = |S|^c e^{j angle(S)}`` and
``|S| = sqrt(re^2 + im^2 + eps)`` (``eps`` keeps values and gradients finite at silence).
Every MSE is a mean over all elements; SI-SNR is zero-mean and averaged over the batch.
The speech gain is ``20 log10(alpha)`` with ``alpha = <est, ref> / <ref, ref>`` (zero-mean),
the scale at which the reference appears in the estimate, as in SI-SNR: the SI-SNR and the
compressed terms barely notice a denoiser that turns the speech down by a few dB, and this term
does (``level_weight`` = 0 leaves it out). Items whose reference is silent do not count.
Weights come from :class:`gtcrn.config.LossConfig`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import LossConfig

# Added to both energies of the SI-SNR ratio (and to the projection's denominator):
# silence vs silence gives 0 dB with finite gradients.
SISNR_EPS: float = 1e-8


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = SISNR_EPS) -> torch.Tensor:
    """Zero-mean scale-invariant SNR in dB of waveforms (B, N) -> (B,)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"si_snr: shapes differ, {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    est = estimate - estimate.mean(dim=-1, keepdim=True)  # (B, N)
    ref = reference - reference.mean(dim=-1, keepdim=True)  # (B, N)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)  # (B, 1)
    target = alpha * ref  # (B, N)
    noise = est - target  # (B, N)
    ratio = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)  # (B,)
    return 10.0 * torch.log10(ratio)


# A reference below this mean power (about -80 dBFS) is silence: it has no level to keep.
SILENT_POWER: float = 1e-8


def speech_gain_db(estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item, the gain in dB at which the reference appears in the estimate, and a mask of
    the items with a non-silent reference: waveforms (B, N) -> ((B,), (B,) bool).

    ``alpha = <e, r> / <r, r>`` after removing the means; ``alpha`` is floored at 1e-3 (-60 dB),
    so an estimate without the speech in it scores -60 dB.
    """
    est = estimate - estimate.mean(dim=-1, keepdim=True)  # (B, N)
    ref = reference - reference.mean(dim=-1, keepdim=True)  # (B, N)
    power = ref.pow(2).mean(-1)  # (B,)
    alpha = (est * ref).mean(-1) / power.clamp_min(SILENT_POWER)  # (B,)
    return 20.0 * torch.log10(alpha.clamp_min(1e-3)), power > SILENT_POWER


def compressed(spec: torch.Tensor, compress: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrum (..., 2) -> (compressed real/imag (..., 2), compressed magnitude |S|^c (...))."""
    mag = torch.sqrt(spec[..., 0].pow(2) + spec[..., 1].pow(2) + eps)  # (...)
    ri = spec / mag.pow(1.0 - compress).unsqueeze(-1)  # (..., 2)
    return ri, mag.pow(compress)


class HybridLoss(nn.Module):
    """GTCRN's hybrid loss (compressed real/imag + compressed magnitude + SI-SNR), optionally
    with a speech-level term."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def _terms(self, est_spec: torch.Tensor, ref_spec: torch.Tensor, est_wav: torch.Tensor,
               ref_wav: torch.Tensor) -> dict[str, torch.Tensor]:
        if est_spec.shape != ref_spec.shape or est_spec.shape[-1] != 2:
            raise ValueError(f"HybridLoss: spectra must both be (B, F, T, 2), got "
                             f"{tuple(est_spec.shape)} and {tuple(ref_spec.shape)}")
        if est_wav.shape != ref_wav.shape:
            raise ValueError(f"HybridLoss: waveforms differ in shape, {tuple(est_wav.shape)} "
                             f"vs {tuple(ref_wav.shape)}")
        cfg = self.config
        # The loss is computed in float32 at least, whatever the autocast dtype.
        dtype = torch.promote_types(est_spec.dtype, torch.float32)
        est_ri, est_mag = compressed(est_spec.to(dtype), cfg.compress, cfg.eps)  # (B,F,T,2), (B,F,T)
        ref_ri, ref_mag = compressed(ref_spec.to(dtype), cfg.compress, cfg.eps)  # (B,F,T,2), (B,F,T)
        real = (est_ri[..., 0] - ref_ri[..., 0]).pow(2).mean()
        imag = (est_ri[..., 1] - ref_ri[..., 1]).pow(2).mean()
        mag = (est_mag - ref_mag).pow(2).mean()
        sisnr_db = si_snr(est_wav.to(dtype), ref_wav.to(dtype)).mean()
        gain_db, voiced = speech_gain_db(est_wav.to(dtype), ref_wav.to(dtype))  # (B,), (B,)
        weights = voiced.to(dtype)  # (B,)
        level = ((gain_db / 10.0).pow(2) * weights).sum() / weights.sum().clamp_min(1.0)
        total = cfg.ri_weight * (real + imag) + cfg.mag_weight * mag - cfg.sisnr_weight * sisnr_db / 10.0
        if cfg.level_weight:
            total = total + cfg.level_weight * level
        return {"total": total, "real": real, "imag": imag, "mag": mag, "sisnr_db": sisnr_db, "level": level}

    def forward(self, est_spec: torch.Tensor, ref_spec: torch.Tensor, est_wav: torch.Tensor,
                ref_wav: torch.Tensor) -> torch.Tensor:
        """Scalar loss from spectra (B, 257, T, 2) and waveforms (B, N)."""
        return self._terms(est_spec, ref_spec, est_wav, ref_wav)["total"]

    @torch.no_grad()
    def components(self, est_spec: torch.Tensor, ref_spec: torch.Tensor, est_wav: torch.Tensor,
                   ref_wav: torch.Tensor) -> dict[str, float]:
        """The unweighted terms and the total as floats: ``total``, ``real``, ``imag``, ``mag``
        (MSEs), ``sisnr_db`` (mean SI-SNR in dB, higher is better) and ``level`` (mean squared
        speech gain in units of 10 dB)."""
        return {k: float(v) for k, v in self._terms(est_spec, ref_spec, est_wav, ref_wav).items()}


__all__ = ["HybridLoss", "SILENT_POWER", "SISNR_EPS", "compressed", "si_snr", "speech_gain_db"]
