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
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# File extensions that name a libsndfile format other than by the format's own name.
_EXTENSION_ALIASES: dict[str, str] = {
    "wave": "WAV", "aif": "AIFF", "aifc": "AIFF", "oga": "OGG", "opus": "OGG", "snd": "AU",
    "iff": "SVX", "sph": "NIST", "sf": "IRCAM",
}
# Extensions searched for when a folder is enhanced (headerless RAW and MATLAB files are left out).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {k.lower() for k in sf.available_formats()} - {"raw", "mat4", "mat5", "ircam", "nist"}
) | frozenset(_EXTENSION_ALIASES) - {"sf"}
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_HIGH_RESOLUTION = frozenset({"FLOAT", "DOUBLE", "PCM_32", "PCM_24"})


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file the usual permissions (0666 & ~umask; ``mkstemp`` makes
    it 0600) and rename it atomically over ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    formats = {k.lower(): k for k in sf.available_formats()}
    if ext in formats:
        return formats[ext]
    if ext in _EXTENSION_ALIASES:
        return _EXTENSION_ALIASES[ext]
    raise AudioError(f"{path}: unsupported output extension {path.suffix!r}")


def format_for(path: str | Path) -> str:
    """The libsndfile format (``"WAV"``, ``"FLAC"``, ...) an output path's extension asks for."""
    return _format_for(Path(path))


def is_float_subtype(subtype: str | None) -> bool:
    """Whether samples of this subtype may exceed [-1, 1] (float files); others must be clipped."""
    return subtype in _FLOAT_SUBTYPES


def output_subtype(fmt: str, subtype: str | None, extension: str = "") -> str | None:
    """The subtype to write ``fmt`` with, keeping the input's ``subtype`` when the format can hold it.

    Fallbacks, in order: Opus for ``.opus`` files, PCM_24 for high-resolution input
    (float, 32- or 24-bit) in a format without that subtype (e.g. FLOAT -> FLAC), then
    the format's default subtype; ``None`` lets libsndfile choose.
    """
    ext = extension.lower().lstrip(".")
    candidates: list[str | None] = []
    if ext == "opus" and subtype != "OPUS":
        candidates.append("OPUS")
    candidates.append(subtype)
    if subtype in _HIGH_RESOLUTION:
        candidates.append("PCM_24")
    candidates.append(sf.default_subtype(fmt))
    for candidate in candidates:
        if candidate and sf.check_format(fmt, candidate):
            return candidate
    return None
