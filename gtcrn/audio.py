"""Audio I/O shared by enhancement, evaluation, data preparation and training.

Reading goes through ``soundfile``, resampling through ``soxr`` and writing is
atomic (a temporary file in the destination folder, then ``os.replace``), so a
crash never leaves a half-written output and never touches an input.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(Exception):
    """A file could not be read or written; the message names the file and the problem."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int, str]:
    """Read a file as float32 (channels, samples); return (audio, sample_rate, subtype)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    return np.ascontiguousarray(data.T), int(sr), info.subtype  # (channels, samples)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) or (samples,) float audio with soxr (VHQ)."""
    if sr_in == sr_out:
        return audio
    x = np.asarray(audio, dtype=np.float32)
    y = soxr.resample(x.T if x.ndim == 2 else x, sr_in, sr_out, quality="VHQ")  # (samples[, ch])
    return np.ascontiguousarray(y.T if x.ndim == 2 else y, dtype=np.float32)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write (channels, samples) or (samples,) audio atomically to ``path``."""
    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    data = data.T if data.ndim == 2 else data  # (samples[, channels])
    fmt = _format_for(path)
    if subtype is not None and not sf.check_format(fmt, subtype):
        subtype = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    formats = {k.lower(): k for k in sf.available_formats()}
    if ext in formats:
        return formats[ext]
    if ext in ("oga",):
        return "OGG"
    raise AudioError(f"{path}: unsupported output extension {path.suffix!r}")
