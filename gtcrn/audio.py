"""Audio I/O shared by enhancement, evaluation, data preparation and training.

Reading goes through ``soundfile``, resampling through ``soxr`` and writing is
atomic (a temporary file in the destination folder, then ``os.replace``), so a
crash never leaves a half-written output and never touches an input.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr


class AudioError(Exception):
    """A file could not be read or written; the message names the file and the problem."""


def sf_path(path: str | Path) -> bytes:
    """A path as libsndfile takes it: the file system's bytes, so that a name that is not valid
    UTF-8 (surrogate-escaped by Python, e.g. ``caf\\udce9.wav``) opens like any other."""
    return os.fsencode(path)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without libsndfile's ``Error opening PATH:`` prefix."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = re.sub(r"^Error opening .*?: (?=\S)", "", " ".join(str(text).split()))
    return text


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open an audio file for reading; every problem becomes an :class:`AudioError` naming the
    file: missing, unreadable, a folder, empty (0 bytes), not audio, or truncated (a WAV or AIFF
    header that promises more frames than the file holds, see :func:`header_frames`)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # clean OS errors (missing, permission, folder) before libsndfile's
            size = os.fstat(fh.fileno()).st_size
            claimed = header_frames(fh)
        if size == 0:
            raise AudioError(f"{path}: empty file (0 bytes)")
        handle = sf.SoundFile(sf_path(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read ({one_line(exc)})") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({one_line(exc)})") from None
    if claimed is not None and handle.frames < claimed:
        handle.close()
        raise AudioError(f"{path}: truncated: header says {claimed} frames, file holds {handle.frames}")
    return handle


def read_audio(path: str | Path) -> tuple[np.ndarray, int, str]:
    """Read a file as float32 (channels, samples); return (audio, sample_rate, subtype).

    Raises :class:`AudioError` naming the file (see :func:`open_audio`)."""
    path = Path(path)
    with open_audio(path) as handle:
        try:
            data = handle.read(dtype="float32", always_2d=True)  # (samples, channels)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(f"{path}: read error ({one_line(exc)})") from None
        return np.ascontiguousarray(data.T), int(handle.samplerate), handle.subtype  # (channels, samples)


# WAV format tags whose frames all have the data chunk's block size (PCM, float, A-law, mu-law).
_FIXED_FRAME_WAV_TAGS = frozenset({1, 3, 6, 7})
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})  # streamed WAVs: size not filled in


def header_frames(fh: BinaryIO) -> int | None:
    """The number of frames a WAV (RIFF, RIFX, RF64) or AIFF header promises, or None where the
    header does not say (another format, compressed data, a streamed file with no size).

    Reads from the start of the open binary file ``fh``. A file that holds fewer frames than
    this is truncated: libsndfile then reads what is there without an error.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return _wav_frames(fh, ">" if head[:4] == b"RIFX" else "<", head[:4] == b"RF64")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_frames(fh, head[8:12] == b"AIFC")
    return None


def _chunks(fh: BinaryIO, endian: str):
    """(chunk id, size, offset of its body) of the chunks that follow, in order."""
    while True:
        hdr = fh.read(8)
        if len(hdr) < 8:
            return
        cid, size = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
        start = fh.tell()
        yield cid, size, start
        fh.seek(start + size + (size & 1))


def _wav_frames(fh: BinaryIO, endian: str, rf64: bool) -> int | None:
    block, tag, data64 = 0, None, None
    for cid, size, _ in _chunks(fh, endian):
        if cid == b"ds64":
            body = fh.read(min(size, 24))
            data64 = struct.unpack("<Q", body[8:16])[0] if len(body) >= 16 else None
        elif cid == b"fmt ":
            body = fh.read(min(size, 40))
            if len(body) < 16:
                return None
            tag, block = struct.unpack(endian + "H", body[:2])[0], struct.unpack(endian + "H", body[12:14])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack(endian + "H", body[24:26])[0]
        elif cid == b"data":
            if rf64 and size == 0xFFFFFFFF:
                size = data64
            if size is None or size in _UNKNOWN_SIZES or not block or tag not in _FIXED_FRAME_WAV_TAGS:
                return None
            return size // block
    return None


def _aiff_frames(fh: BinaryIO, aifc: bool) -> int | None:
    for cid, size, _ in _chunks(fh, ">"):
        if cid == b"COMM":
            body = fh.read(min(size, 22))
            if len(body) < 18:
                return None
            if aifc and body[18:22] not in (b"NONE", b"sowt", b"twos", b"fl32", b"FL32", b"fl64", b"FL64"):
                return None  # compressed: leave it to libsndfile
            return struct.unpack(">I", body[2:6])[0]
    return None


def resample(audio: np.ndarray, sr_in: float, sr_out: float) -> np.ndarray:
    """Resample (channels, samples) or (samples,) float audio with soxr (VHQ); rates need not be whole."""
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
        sf.write(sf_path(tmp), data, sample_rate, subtype=subtype, format=fmt)
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


SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile's sf_command for the PEAK chunk (sndfile.h)


def without_peak_chunk(handle: sf.SoundFile) -> sf.SoundFile:
    """Leave libsndfile's PEAK chunk out of a file just opened for writing (before its first
    sample). The chunk stamps float WAV and AIFF files with the time of writing, so the same
    audio written twice would not be the same bytes; without it, it is."""
    sf._snd.sf_command(handle._file, SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
    return handle


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
