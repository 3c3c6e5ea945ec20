"""HybridLoss against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gtcrn.config import LossConfig
from gtcrn.stft import stft
from gtcrn.training.losses import HybridLoss, si_snr, speech_gain_db


def _spec(re: float, im: float) -> torch.Tensor:
    """A one-bin, one-frame spectrum (1, 1, 1, 2)."""
    return torch.tensor([re, im], dtype=torch.float64).view(1, 1, 1, 2)


def _orthogonal_pair(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two zero-mean orthogonal unit-amplitude sinusoids over whole periods (B=1, N)."""
    t = torch.arange(n, dtype=torch.float64)
    s = torch.sin(2 * math.pi * 3 * t / n)  # energy n/2
    e = torch.cos(2 * math.pi * 5 * t / n)  # energy n/2, orthogonal to s and to constants
    return s.view(1, n), e.view(1, n)


def test_one_bin_spectral_terms_by_hand() -> None:
    # est = 3 + 4j (|S| = 5, angle atan2(4, 3)), ref = 0 + 2j (|S| = 2, angle pi/2).
    # Compressed: |S|^0.3 (cos angle, sin angle).
    est_mag, ref_mag = 5.0, 2.0
    est_angle, ref_angle = math.atan2(4, 3), math.pi / 2
    exp_real = (est_mag**0.3 * math.cos(est_angle) - ref_mag**0.3 * math.cos(ref_angle)) ** 2
    exp_imag = (est_mag**0.3 * math.sin(est_angle) - ref_mag**0.3 * math.sin(ref_angle)) ** 2
    exp_mag = (est_mag**0.3 - ref_mag**0.3) ** 2
    s, e = _orthogonal_pair()
    cfg = LossConfig(ri_weight=2.0, mag_weight=3.0, sisnr_weight=0.5)
    comps = HybridLoss(cfg).components(_spec(3, 4), _spec(0, 2), s + 0.5 * e, s)
    assert comps["real"] == pytest.approx(exp_real, rel=1e-9)
    assert comps["imag"] == pytest.approx(exp_imag, rel=1e-9)
    assert comps["mag"] == pytest.approx(exp_mag, rel=1e-9)
    # SI-SNR: target s, noise 0.5 e with |e| = |s| -> 10 log10(1 / 0.25) = 6.0206 dB.
    assert comps["sisnr_db"] == pytest.approx(10 * math.log10(4.0), abs=1e-6)
    expected_total = 2.0 * (exp_real + exp_imag) + 3.0 * exp_mag - 0.5 * 10 * math.log10(4.0) / 10
    assert comps["total"] == pytest.approx(expected_total, rel=1e-7)


def test_default_weights_and_mean_over_elements() -> None:
    rng = np.random.default_rng(0)
    est = rng.standard_normal((2, 3, 4, 2))
    ref = rng.standard_normal((2, 3, 4, 2))
    # Independent route: complex numbers, |S|^0.3 e^{j angle S}.
    ce = (est[..., 0] + 1j * est[..., 1])
    cr = (ref[..., 0] + 1j * ref[..., 1])
    comp_e = np.abs(ce) ** 0.3 * np.exp(1j * np.angle(ce))
    comp_r = np.abs(cr) ** 0.3 * np.exp(1j * np.angle(cr))
    exp_ri = np.mean((comp_e.real - comp_r.real) ** 2) + np.mean((comp_e.imag - comp_r.imag) ** 2)
    exp_mag = np.mean((np.abs(ce) ** 0.3 - np.abs(cr) ** 0.3) ** 2)
    s, e = _orthogonal_pair()
    wav_ref = torch.cat([s, s])  # (2, N)
    wav_est = torch.cat([s + e, s + 0.1 * e])  # SI-SNR 0 dB and 20 dB -> mean 10 dB
    loss = HybridLoss()(torch.from_numpy(est), torch.from_numpy(ref), wav_est, wav_ref)
    expected = 30 * exp_ri + 70 * exp_mag - 10.0 / 10
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert loss.dim() == 0


def test_si_snr_hand_values_scale_and_offset_invariance() -> None:
    s, e = _orthogonal_pair(128)
    # est = 2 s + e: projection 2 s (energy 4 n/2), noise e (energy n/2) -> 10 log10 4.
    assert float(si_snr(2 * s + e, s)) == pytest.approx(10 * math.log10(4), abs=1e-6)
    base = float(si_snr(s + 0.3 * e, s))
    assert base == pytest.approx(-20 * math.log10(0.3), abs=1e-6)
    assert float(si_snr(7.5 * (s + 0.3 * e), s)) == pytest.approx(base, abs=1e-6)  # scale of estimate
    assert float(si_snr(s + 0.3 * e, 0.01 * s)) == pytest.approx(base, abs=1e-4)  # scale of reference (eps)
    assert float(si_snr(s + 0.3 * e + 4.0, s - 2.0)) == pytest.approx(base, abs=1e-6)  # zero-mean
    # A scaled copy is (nearly) perfect; the sign does not matter either.
    assert float(si_snr(-3 * s, s)) > 100
    # Orthogonal estimate: no projection at all -> very low.
    assert float(si_snr(e, s)) < -60


def test_sisnr_term_scale_invariant_in_loss() -> None:
    torch.manual_seed(0)
    ref_wav = torch.randn(2, 4096)
    est_wav = ref_wav + 0.3 * torch.randn(2, 4096)
    ref_spec, est_spec = stft(ref_wav), stft(est_wav)
    loss = HybridLoss(LossConfig(ri_weight=0.0, mag_weight=0.0, sisnr_weight=1.0))
    a = float(loss(est_spec, ref_spec, est_wav, ref_wav))
    b = float(loss(est_spec, ref_spec, 5.0 * est_wav, ref_wav))
    assert a == pytest.approx(b, rel=1e-5)
    assert a == pytest.approx(-float(si_snr(est_wav, ref_wav).mean()) / 10, rel=1e-6)


def test_perfect_estimate_has_zero_spectral_terms() -> None:
    torch.manual_seed(1)
    wav = torch.randn(1, 3000)
    spec = stft(wav)
    comps = HybridLoss().components(spec, spec.clone(), wav, wav.clone())
    assert comps["real"] == 0 and comps["imag"] == 0 and comps["mag"] == 0
    assert comps["sisnr_db"] > 60
    assert comps["total"] == pytest.approx(-comps["sisnr_db"] / 10, rel=1e-6)


@pytest.mark.parametrize("ref_zero", [True, False])
def test_gradients_finite_at_zero_input(ref_zero: bool) -> None:
    torch.manual_seed(2)
    ref_wav = torch.zeros(2, 1024) if ref_zero else torch.randn(2, 1024)
    est_wav = torch.zeros(2, 1024, requires_grad=True)
    est_spec = torch.zeros(2, 257, 5, 2, requires_grad=True)
    ref_spec = stft(ref_wav)
    loss = HybridLoss()(est_spec, ref_spec, est_wav, ref_wav)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(est_spec.grad).all() and torch.isfinite(est_wav.grad).all()


def test_gradient_flows_through_stft_path() -> None:
    torch.manual_seed(3)
    ref_wav = torch.randn(1, 2048)
    est_wav = (0.5 * ref_wav + 0.1 * torch.randn(1, 2048)).requires_grad_(True)
    loss = HybridLoss()(stft(est_wav), stft(ref_wav), est_wav, ref_wav)
    loss.backward()
    assert est_wav.grad is not None and torch.isfinite(est_wav.grad).all()
    assert est_wav.grad.abs().sum() > 0


def test_shape_mismatch_raises() -> None:
    loss = HybridLoss()
    with pytest.raises(ValueError, match="spectra"):
        loss(torch.zeros(1, 257, 4, 2), torch.zeros(1, 257, 5, 2), torch.zeros(1, 8), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="waveforms"):
        loss(torch.zeros(1, 257, 4, 2), torch.zeros(1, 257, 4, 2), torch.zeros(1, 8), torch.zeros(1, 9))


def test_level_term_is_the_squared_speech_gain_of_voiced_items() -> None:
    s, e = _orthogonal_pair()
    silent = torch.zeros_like(s)
    ref = torch.cat([s, s, silent])  # (3, N): the third item has no speech
    # 0.5 s (-6.02 dB) plus an orthogonal part that does not move alpha; 2 s (+6.02 dB); anything.
    est = torch.cat([0.5 * s + 0.3 * e, 2.0 * s, e])  # (3, N)
    gain, voiced = speech_gain_db(est, ref)
    assert voiced.tolist() == [True, True, False]
    assert gain[:2].tolist() == pytest.approx([20 * math.log10(0.5), 20 * math.log10(2.0)], rel=1e-9)
    spec = torch.zeros(3, 1, 1, 2, dtype=torch.float64)
    comps = HybridLoss(LossConfig()).components(spec, spec, est, ref)
    expected = ((20 * math.log10(0.5) / 10) ** 2 + (20 * math.log10(2.0) / 10) ** 2) / 2
    assert comps["level"] == pytest.approx(expected, rel=1e-9)
    # level_weight = 0 (the default) leaves GTCRN's loss as published; a weight adds w x level.
    with_level = HybridLoss(LossConfig(level_weight=4.0)).components(spec, spec, est, ref)
    assert with_level["total"] == pytest.approx(comps["total"] + 4.0 * expected, rel=1e-9)
    # A unity-gain estimate costs nothing, whatever noise it carries.
    unity = HybridLoss(LossConfig()).components(spec[:1], spec[:1], s + 0.4 * e, s)
    assert unity["level"] == pytest.approx(0.0, abs=1e-18)


def test_level_term_gradient_raises_a_turned_down_estimate() -> None:
    s, _ = _orthogonal_pair()
    scale = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    spec = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    loss = HybridLoss(LossConfig(ri_weight=0, mag_weight=0, sisnr_weight=0, level_weight=1.0))
    loss(spec, spec, scale * s, s).backward()
    assert scale.grad is not None and float(scale.grad) < 0  # descending raises the gain toward 0 dB
