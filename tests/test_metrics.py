"""Objective metrics: hand-computed SI-SDR, PESQ/STOI identity and degradation, failures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gtcrn import metrics
from gtcrn.audio import read_audio, resample
from gtcrn.metrics import compute_metrics, pesq_score, si_sdr, stoi_score
from tests.helpers import speech_like

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LIBRISPEECH = SHARED / "data" / "speech" / "librispeech-train-clean-100"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """3 s of real 16 kHz speech when ../shared has LibriSpeech, else a synthetic stand-in."""
    files = sorted(LIBRISPEECH.glob("*.flac")) if LIBRISPEECH.is_dir() else []
    if files:
        audio, sr, _ = read_audio(files[0])
        assert sr == 16000
        return audio[0, : 3 * sr]
    return speech_like(3.0)


def _add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(x.size)
    n *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(n**2)) * 10 ** (-snr_db / 20)
    return (x + n).astype(np.float32)


# ---- SI-SDR -------------------------------------------------------------------------------------

def _sines(n: int = 1600) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean orthogonal sinusoids over whole periods, both of energy n / 2."""
    t = np.arange(n)
    return np.sin(2 * np.pi * 7 * t / n), np.sin(2 * np.pi * 11 * t / n)


@pytest.mark.parametrize("ratio_db", [-10.0, 0.0, 10.0, 23.0])
def test_si_sdr_known_energy_ratio(ratio_db: float) -> None:
    s, e = _sines()
    # |s|^2 / |a e|^2 = 10^(ratio/10) -> a = 10^(-ratio/20).
    est = s + 10 ** (-ratio_db / 20) * e
    assert si_sdr(est, s) == pytest.approx(ratio_db, abs=1e-9)


def test_si_sdr_projection_by_hand() -> None:
    s, e = _sines()
    # est = 1.5 s + 0.5 e: the scaled target is 1.5 s, the error 0.5 e -> 10 log10(1.5^2 / 0.5^2).
    assert si_sdr(1.5 * s + 0.5 * e, s) == pytest.approx(10 * math.log10(9.0), abs=1e-9)
    # A negative gain is a scale too.
    assert si_sdr(-1.5 * s + 0.5 * e, s) == pytest.approx(10 * math.log10(9.0), abs=1e-9)


def test_si_sdr_invariances() -> None:
    s, e = _sines()
    base = si_sdr(s + 0.2 * e, s)
    assert si_sdr(0.001 * (s + 0.2 * e), s) == pytest.approx(base, abs=1e-9)
    assert si_sdr(s + 0.2 * e, 40 * s) == pytest.approx(base, abs=1e-9)
    assert si_sdr(s + 0.2 * e + 3.0, s - 1.0) == pytest.approx(base, abs=1e-9)  # zero-mean
    assert si_sdr(s, s) > 100
    assert si_sdr(e, s) < -100


def test_si_sdr_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="length"):
        si_sdr(np.ones(10), np.ones(11))
    with pytest.raises(ValueError, match="1-D"):
        si_sdr(np.ones((2, 10)), np.ones((2, 10)))


# ---- PESQ / STOI --------------------------------------------------------------------------------

def test_identity_scores(speech: np.ndarray) -> None:
    m = compute_metrics(speech, speech, 16000)
    assert set(m) == {"pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "speech_gain"}
    assert m["speech_gain"] == pytest.approx(0.0, abs=1e-9)
    assert m["pesq_wb"] > 4.4
    assert m["pesq_nb"] > 4.3
    assert m["stoi"] > 0.99 and m["estoi"] > 0.99
    assert m["si_sdr"] > 100


def test_more_noise_scores_lower(speech: np.ndarray) -> None:
    results = [compute_metrics(speech, _add_noise(speech, snr), 16000) for snr in (30, 20, 10, -5)]
    for key in ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr"):
        values = [r[key] for r in results]
        # PESQ bottoms out near 1.0 in white noise at 10 dB SNR and below, where its order is
        # noise (the synthetic stand-in scores 1.04 at 10 dB and 1.06 at -5 dB): compare above.
        upto = 3 if key.startswith("pesq") else 4
        assert all(a > b for a, b in zip(values[:upto - 1], values[1:upto], strict=True)), (key, values)
    assert results[0]["si_sdr"] == pytest.approx(30, abs=0.5)
    assert results[3]["si_sdr"] == pytest.approx(-5, abs=0.5)


def test_pesq_resamples_other_rates(speech: np.ndarray) -> None:
    ref48 = resample(speech, 16000, 48000)
    deg48 = resample(_add_noise(speech, 10), 16000, 48000)
    wb = pesq_score(ref48, deg48, 48000, "wb")
    assert wb == pytest.approx(pesq_score(resample(ref48, 48000, 16000), resample(deg48, 48000, 16000),
                                          16000, "wb"), abs=1e-6)
    nb = pesq_score(ref48, deg48, 48000, "nb")
    assert nb == pytest.approx(pesq_score(resample(ref48, 48000, 8000), resample(deg48, 48000, 8000),
                                          8000, "nb"), abs=1e-6)
    with pytest.raises(ValueError, match="mode"):
        pesq_score(ref48, deg48, 48000, "swb")


def test_pesq_failure_returns_none(speech: np.ndarray) -> None:
    silence = np.zeros(32000, dtype=np.float32)
    assert pesq_score(silence, silence, 16000) is None
    assert pesq_score(silence, _add_noise(speech[:32000], 0), 16000, "nb") is None
    assert pesq_score(speech[:200], speech[:200], 16000) is None  # too short for an utterance
    # Digital silence as the estimate cannot be level-aligned: a failure too, not a crash ...
    assert pesq_score(speech, np.zeros_like(speech), 16000) is None
    # ... while faint noise instead of speech is a (very bad) score.
    faint = 1e-6 * np.random.default_rng(0).standard_normal(speech.size)
    low = pesq_score(speech, faint, 16000)
    assert low is not None and low < 1.5


def test_stoi_silent_reference_is_none(speech: np.ndarray) -> None:
    silence = np.zeros(16000, dtype=np.float32)
    assert stoi_score(silence, speech[:16000], 16000) is None
    assert stoi_score(speech, speech, 16000, extended=True) > 0.99


def test_compute_metrics_improvement_and_subset(speech: np.ndarray) -> None:
    noisy = _add_noise(speech, 0)
    est = _add_noise(speech, 12, seed=5)
    m = compute_metrics(speech, est, 16000, noisy=noisy, metrics=("si_sdr", "si_sdr_i", "stoi"))
    assert set(m) == {"si_sdr", "si_sdr_i", "stoi"}
    assert m["si_sdr_i"] == pytest.approx(si_sdr(est, speech) - si_sdr(noisy, speech), abs=1e-9)
    assert m["si_sdr_i"] == pytest.approx(12, abs=0.7)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(speech, est, metrics=("pesq",))
    silent = compute_metrics(np.zeros(16000), speech[:16000], 16000, noisy=speech[:16000])
    assert all(v is None for v in silent.values()) and "si_sdr_i" in silent


# ---- DNSMOS -------------------------------------------------------------------------------------

def test_dnsmos_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_DNSMOS_MODULES", ("speechmos", "no_such_module_for_gtcrn"))
    assert not metrics.dnsmos_available()
    assert metrics.dnsmos(np.zeros(100), 16000) is None
    with pytest.raises(metrics.MetricUnavailableError,
                       match=r"no_such_module_for_gtcrn.*pip install .*\[dnsmos\]"):
        metrics.dnsmos(np.zeros(100), 16000, required=True)


@pytest.mark.slow
@pytest.mark.skipif(not metrics.dnsmos_available(), reason="the dnsmos extra is not installed")
def test_dnsmos_clean_beats_noisy(speech: np.ndarray) -> None:
    clean = metrics.dnsmos(speech, 16000)
    noisy = metrics.dnsmos(_add_noise(speech, 0), 16000)
    assert set(clean) == {"SIG", "BAK", "OVRL", "P808"}
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    assert clean["BAK"] > noisy["BAK"] + 1 and clean["OVRL"] > noisy["OVRL"]
    assert metrics.dnsmos(np.zeros(16000), 16000) is None


def test_speech_gain_is_the_level_of_the_reference_in_the_estimate(speech: np.ndarray) -> None:
    from gtcrn.metrics import speech_gain_db

    rng = np.random.default_rng(5)
    ref = speech.astype(np.float64)
    for gain_db in (-6.0, -1.0, 0.0, 3.0):
        scaled = ref * 10 ** (gain_db / 20)
        assert speech_gain_db(scaled, ref) == pytest.approx(gain_db, abs=1e-9)
        # Noise uncorrelated with the speech does not move it (up to its chance correlation).
        noisy = scaled + 0.5 * ref.std() * rng.standard_normal(ref.size)
        assert speech_gain_db(noisy, ref) == pytest.approx(gain_db, abs=0.1)
    assert speech_gain_db(-ref, ref) == pytest.approx(-100.0)  # inverted: no speech left in phase
    m = compute_metrics(ref, 0.5 * ref, 16000, metrics=("speech_gain",))
    assert set(m) == {"speech_gain"} and m["speech_gain"] == pytest.approx(20 * np.log10(0.5))
    silent = compute_metrics(np.zeros(16000), ref[:16000], 16000, metrics=("speech_gain",))
    assert silent["speech_gain"] is None
