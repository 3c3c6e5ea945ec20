"""Objective speech-quality metrics on numpy 1-D signals.

* :func:`si_sdr` - zero-mean scale-invariant SDR in dB.
* :func:`pesq_score` - ITU-T P.862 PESQ through the ``pesq`` package: wide-band (P.862.2) at
  16 kHz, narrow-band (P.862.1 MOS-LQO) at 8 kHz; inputs at other rates are resampled first.
  ``None`` when PESQ cannot score the pair (no utterance detected, too short, digital silence).
* :func:`stoi_score` - STOI / extended STOI through ``pystoi`` (``None`` when the reference has
  too little active speech for the 30-frame intermediate measure).
* :func:`speech_gain_db` - the level of the speech in an estimate against the reference, in dB
  (0 dB: speech kept at its level; negative: turned down).
* :func:`compute_metrics` - all of the above in one dict.
* :func:`dnsmos` - non-intrusive DNSMOS P.835 SIG/BAK/OVRL through the optional ``speechmos``
  package (``pip install 'gtcrn[dnsmos]'``); ``None`` when it is not installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .audio import resample
from .extras import install_hint

PESQ_RATES: dict[str, int] = {"wb": 16000, "nb": 8000}
# All keys compute_metrics can produce, in report order.
METRIC_KEYS: tuple[str, ...] = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "si_sdr_i", "speech_gain")
DNSMOS_KEYS: tuple[str, ...] = ("SIG", "BAK", "OVRL")
DNSMOS_RATE = 16000

_EPS = float(np.finfo(np.float64).eps)


class MetricUnavailableError(RuntimeError):
    """An optional metric's package is not installed; the message says what to install."""


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D signal, got shape {arr.shape}")
    return arr


def _pair(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = _as_1d(reference, "reference")
    est = _as_1d(estimate, "estimate")
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate differ in length: {ref.size} vs {est.size} samples")
    return ref, est


def si_sdr(estimate: Any, reference: Any) -> float:
    """Zero-mean scale-invariant SDR of ``estimate`` against ``reference`` in dB.

    With ``e`` and ``r`` mean-removed, ``t = (<e, r> / <r, r>) r`` and the score is
    ``10 log10(|t|^2 / |e - t|^2)``; a float64 epsilon on each energy keeps silence finite.
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = (np.dot(est, ref) + _EPS) / (np.dot(ref, ref) + _EPS)
    target = alpha * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + _EPS) / (np.dot(noise, noise) + _EPS)))


def speech_gain_db(estimate: Any, reference: Any) -> float:
    """Gain in dB applied to the speech: ``20 log10(alpha)`` with ``alpha = <e, r> / <r, r>``
    (mean-removed), the scale of the reference found in the estimate, as in :func:`si_sdr`.

    A denoiser that keeps the speech at its level scores 0 dB; one that turns it down by half
    scores about -6 dB. An estimate uncorrelated with (or opposite to) the reference gives
    ``-inf`` clipped to -100 dB.
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = float(np.dot(est, ref)) / (float(np.dot(ref, ref)) + _EPS)
    return float(20.0 * np.log10(max(alpha, 1e-5)))


def pesq_score(reference: Any, estimate: Any, sample_rate: int, mode: str = "wb") -> float | None:
    """PESQ MOS-LQO: ``mode="wb"`` scores at 16 kHz, ``"nb"`` at 8 kHz (resampling as needed).

    Returns ``None`` when PESQ cannot score the pair: no utterance detected, a signal too short,
    or either signal all zeros (PESQ's level alignment is undefined for digital silence).
    """
    import pesq as pesq_lib

    if mode not in PESQ_RATES:
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    ref, est = _pair(reference, estimate)
    rate = PESQ_RATES[mode]
    ref = resample(ref.astype(np.float32), sample_rate, rate).astype(np.float64)
    est = resample(est.astype(np.float32), sample_rate, rate).astype(np.float64)
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(est))):
        raise ValueError("PESQ: signals contain NaN or infinity")
    if not (np.any(ref) and np.any(est)):
        return None  # silence has no utterance to align (and pesq would divide by zero)
    try:
        return float(pesq_lib.pesq(rate, ref, est, mode))
    except (pesq_lib.PesqError, ValueError):  # NoUtterancesError, BufferTooShortError, NaN levels
        return None


def stoi_score(reference: Any, estimate: Any, sample_rate: int, extended: bool = False) -> float | None:
    """STOI (or extended STOI) in [0, 1] via ``pystoi`` (which works at 10 kHz internally).

    Returns ``None`` for a silent reference or when fewer than 30 non-silent frames remain
    (pystoi would return 0 or 1e-5).
    """
    from pystoi import stoi

    ref, est = _pair(reference, estimate)
    if not np.any(ref):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref, est, sample_rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return value


def compute_metrics(reference: Any, estimate: Any, sample_rate: int = 16000, noisy: Any = None,
                    metrics: Iterable[str] | None = None) -> dict[str, float | None]:
    """Intrusive metrics of ``estimate`` against ``reference`` (1-D, same length and rate).

    Keys: ``pesq_wb``, ``pesq_nb``, ``stoi``, ``estoi``, ``si_sdr``, ``speech_gain`` (see
    :func:`speech_gain_db`), plus ``si_sdr_i`` (SI-SDR of the estimate minus that of ``noisy``)
    when ``noisy`` is given. ``metrics`` restricts the
    computation to a subset of those keys (e.g. ``("pesq_wb", "stoi", "si_sdr")`` for speed).
    A value is ``None`` when the pair could not be scored (PESQ found no utterance, too few
    active STOI frames, or - for every metric - a silent reference).
    """
    wanted = set(METRIC_KEYS if metrics is None else metrics)
    unknown = wanted - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {list(METRIC_KEYS)}")
    ref, est = _pair(reference, estimate)
    out: dict[str, float | None] = {}
    if "pesq_wb" in wanted:
        out["pesq_wb"] = pesq_score(ref, est, sample_rate, "wb")
    if "pesq_nb" in wanted:
        out["pesq_nb"] = pesq_score(ref, est, sample_rate, "nb")
    if "stoi" in wanted:
        out["stoi"] = stoi_score(ref, est, sample_rate, extended=False)
    if "estoi" in wanted:
        out["estoi"] = stoi_score(ref, est, sample_rate, extended=True)
    if wanted & {"si_sdr", "si_sdr_i"}:
        silent = not np.any(ref)  # SI-SDR against silence is undefined: None, like PESQ
        value = None if silent else si_sdr(est, ref)
        if "si_sdr" in wanted:
            out["si_sdr"] = value
        if noisy is not None and "si_sdr_i" in wanted:
            _, noisy_arr = _pair(ref, noisy)
            out["si_sdr_i"] = None if value is None else value - si_sdr(noisy_arr, ref)
    if "speech_gain" in wanted:
        out["speech_gain"] = None if not np.any(ref) else speech_gain_db(est, ref)
    return out


# ---- DNSMOS (optional extra) -------------------------------------------------------------------

_DNSMOS_MODULES = ("speechmos", "onnxruntime", "librosa", "requests")


def dnsmos_available() -> bool:
    """Whether DNSMOS can run (``speechmos`` and the packages it imports without declaring)."""
    return all(importlib.util.find_spec(m) is not None for m in _DNSMOS_MODULES)


def dnsmos(audio: Any, sample_rate: int, required: bool = False) -> dict[str, float] | None:
    """DNSMOS P.835 of a 1-D signal: ``{"SIG", "BAK", "OVRL", "P808"}`` MOS values (1..5).

    The signal is resampled to 16 kHz and clipped to [-1, 1]; clips shorter than the model's
    9.01 s window are repeated by ``speechmos``. Returns ``None`` when ``speechmos`` (or one of
    onnxruntime, librosa, requests) is not installed - or raises :class:`MetricUnavailableError`
    when ``required`` - and ``None`` for an empty or all-zero signal.
    """
    if not dnsmos_available():
        if required:
            missing = [m for m in _DNSMOS_MODULES if importlib.util.find_spec(m) is None]
            raise MetricUnavailableError(
                f"DNSMOS needs {', '.join(missing)}: {install_hint('dnsmos')}")
        return None
    from speechmos import dnsmos as speechmos_dnsmos

    x = _as_1d(audio, "audio").astype(np.float32)
    x = resample(x, sample_rate, DNSMOS_RATE)
    if x.size == 0 or not np.any(x):
        return None  # speechmos would loop forever on an empty clip, or take log(0) of silence
    if not np.all(np.isfinite(x)):
        raise ValueError("DNSMOS: signal contains NaN or infinity")
    x = np.clip(x, -1.0, 1.0)
    res = speechmos_dnsmos.run(x, DNSMOS_RATE)
    return {"SIG": float(res["sig_mos"]), "BAK": float(res["bak_mos"]),
            "OVRL": float(res["ovrl_mos"]), "P808": float(res["p808_mos"])}


__all__ = ["DNSMOS_KEYS", "METRIC_KEYS", "MetricUnavailableError", "compute_metrics", "dnsmos",
           "dnsmos_available", "pesq_score", "si_sdr", "speech_gain_db", "stoi_score"]
