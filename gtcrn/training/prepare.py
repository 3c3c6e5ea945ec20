"""Data preparation: build the train/dev pool of real recordings for the 16 kHz denoiser.

``prepare_pool(out_dir)`` gathers

* speech: LibriSpeech train-clean-100 from ``../shared/data`` (one utterance per speaker,
  40 speakers held out for dev, 20 M / 20 F), the GCompris voices of the shared folder (short
  words of about 50 voices in 41 languages, concatenated per language into 4-8 s utterances) and
  the spoken-voice files of the Debian packages in :data:`SPEECH_PACKAGES`;
* noise: the shared noise folders (Blanket ambiences with a fixed dev list), the sound effects /
  ambiences / music of :data:`NOISE_PACKAGES` (voices skipped) and seeded synthetic noise
  (white, pink, brown, mains hum);
* room impulse responses (kind ``rir``): the measured responses of ``../shared/data/rir``, kept
  exactly as they are (no trimming, no level change), with a fixed dev list;

trims leading/trailing silence (speech and noise), converts everything to 16 kHz mono FLAC
(PCM_16), splits train/dev (speech by speaker, noise by file) and writes ``manifest.jsonl`` and
``sources.json`` in the pool root.

Every speech file is screened (bandwidth, noise floor, clipping: :func:`screen_speech`); badly
failing files are dropped, and each speech source is kept, down-weighted (manifest ``weight``) or
dropped from the medians of its files (:func:`screen_decision`); the figures go to
``sources.json``.

Each Debian package's ``usr/share/doc/PKG/copyright`` (or, for the shared folders, the
``manifest.json`` beside the audio) is read and the licence of every audio file is recorded;
material whose licence does not clearly allow distributing a model trained on it is excluded and
reported. Before downloading, the size of every package not yet cached is printed.

The pool layout does not depend on the split: ``{kind}/{source}/...flac``; the split lives in
the manifest. Running again with the same arguments skips downloads, extraction and every
output file that already exists and writes an identical manifest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from gtcrn.audio import AudioError, read_audio, resample, write_audio

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

SAMPLE_RATE = 16000
SUBTYPE = "PCM_16"
MANIFEST_NAME = "manifest.jsonl"
SOURCES_NAME = "sources.json"
#: Keys of a manifest row, in order. ``weight`` (1.0 unless the source was down-weighted by the
#: speech screening) is ignored by readers that do not know it (``gtcrn.training.data.read_manifest``).
MANIFEST_KEYS = (
    "path", "kind", "split", "source", "licence", "speaker", "sex", "duration", "sample_rate", "weight"
)
KINDS = ("speech", "noise", "rir")

#: Where the shared material is looked for by default, relative to the working directory
#: (``../shared`` beside a checkout run from its root); never relative to the installed package.
DEFAULT_SHARED_DIR = Path("..") / "shared"
#: About how much ``apt-get download`` fetches for the Debian packages on a first run.
DEBIAN_DOWNLOAD_GB = 1.6


def default_shared_dir() -> Path:
    """``../shared`` from the working directory, as an absolute path."""
    return (Path.cwd() / DEFAULT_SHARED_DIR).resolve()

LIBRISPEECH_DIR = "speech/librispeech-train-clean-100"
LIBRISPEECH_SOURCE = "librispeech-train-clean-100"
LIBRISPEECH_DEV_PER_SEX = 20  # 20 M + 20 F dev speakers
#: Licences of the shared folders, used when ``README.md`` does not list them.
SHARED_LICENCES: dict[str, str] = {
    "speech/librispeech-train-clean-100": "CC-BY-4.0",
    "noise/speech-commands-background": "CC-BY-4.0",
    "noise/freesound-cc0": "CC0-1.0",
}
SHARED_MANIFEST = "manifest.json"  # per-file licences of a shared folder: [{file, licence, ...}]

GCOMPRIS_DIR = "speech/gcompris-voices"
GCOMPRIS_SOURCE = "gcompris-voices"
GCOMPRIS_MIN_CLIP_S = 0.2  # shorter clips (after trimming) are left out of the utterances
CONCAT_TARGET_S = (4.0, 8.0)  # seeded target length of a concatenated utterance
CONCAT_MAX_S = 8.0  # a clip that would push an utterance beyond this starts the next one
CONCAT_GAP_S = (0.1, 0.3)  # seeded silent gap between two clips
CONCAT_CLIP_RMS_DBFS = -20.0  # each clip is levelled to this RMS before concatenation

RIR_DIR = "rir"
#: (regex on the manifest's ``source`` field or the file name, source name); else ``real-rir``.
RIR_SOURCES: tuple[tuple[str, str], ...] = ((r"^OpenAIR\b", "openair-rir"), (r"clap", "clap-rir"))
#: Fixed, whole-file dev lists (file stems) of the sources that are too few or too different to
#: be split at random: 3 of the 11 Blanket ambiences (a babble, a vehicle and a wind scene) and 2 of
#: the 5 measured rooms (a small studio and a church); everything else of these sources is train.
FIXED_DEV_FILES: dict[str, tuple[str, ...]] = {
    "blanket": ("coffee-shop", "train", "wind"),
    "openair-rir": ("genesis_6_studio_live_room", "st_margaret_s_church"),
    "clap-rir": (),
    "real-rir": (),
}
SYNTHETIC_SOURCE = "synthetic"
SYNTHETIC_LICENCE = "CC0-1.0"  # generated by this module

DEV_FRACTION = 0.15  # noise files / non-LibriSpeech speech hours held out for dev
CUT_SPLIT_MAX_FILES = 3  # noise sources with at most this many files: cut each file train/dev
CUT_DEV_MIN_S = 1.0
MIN_SPEECH_S = 1.0  # speech clips shorter than this after trimming are dropped
MIN_NOISE_S = 1.0  # shorter noise events are assembled into montages
MIN_EVENT_S = 0.05  # noise events shorter than this are dropped
MONTAGE_S = 10.0  # target length of a montage of short noise events
MONTAGE_GAP_S = (0.05, 0.5)
TRIM_TOP_DB = {"speech": 40.0, "noise": 50.0}  # threshold below the loudest frame
TRIM_FLOOR_DBFS = -70.0  # frames below this are silence whatever the peak
TRIM_MARGIN_S = 0.05
QUIET_PEAK = 0.05  # clips with a lower peak are raised to TARGET_PEAK
TARGET_PEAK = 0.5
MAX_PEAK = 0.99  # clips with a higher peak are lowered to this (no clipping in PCM_16)

SYNTH_TYPES: tuple[str, ...] = ("white", "pink", "brown", "hum")
SYNTH_CLIPS_PER_TYPE = 12
SYNTH_DEV_CLIPS_PER_TYPE = 2
SYNTH_CLIP_S = 30.0
SYNTH_RMS_DBFS = -20.0

# ---- speech screening (:func:`screen_speech`, :func:`screen_decision`) ----------------------
# Figures per file, on the decoded 16 kHz signal before trimming, in 32 ms frames (16 ms hop):
#   hf_db    energy above SCREEN_HF_HZ relative to the total, over the active frames (within
#            SCREEN_ACTIVE_DB of the loudest): the bandwidth;
#   floor_db 10th minus 90th percentile of the frame RMS (dB; digitally silent frames ignored):
#            the noise floor below the speech (for short clips without pauses it reads high);
#   clip     share of samples at or above SCREEN_CLIP_LEVEL of full scale.
SCREEN_FRAME = 512
SCREEN_HOP = 256
SCREEN_HF_HZ = 3500.0
SCREEN_ACTIVE_DB = 30.0
SCREEN_SILENT_DBFS = -100.0
SCREEN_CLIP_LEVEL = 0.98
#: Median hf_db of the shared LibriSpeech utterances (measured), the reference for bandwidth.
SCREEN_REF_HF_DB = -18.1
#: A file is dropped when it is badly band-limited, has almost no dynamics or is badly clipped.
SCREEN_FILE_MIN_HF_DB = SCREEN_REF_HF_DB - 22.0
SCREEN_FILE_MAX_FLOOR_DB = -8.0
SCREEN_FILE_MAX_CLIP = 0.01
#: A source (medians over its files) is dropped when band-limited (12 dB below LibriSpeech: the
#: muffled fillets-ng-data-nl is about 18 dB below), noisy or clipped ...
SCREEN_DROP_HF_DB = SCREEN_REF_HF_DB - 12.0
SCREEN_DROP_FLOOR_DB = -12.0
SCREEN_DROP_CLIP = 1e-3
#: ... and down-weighted when somewhat band-limited or noisy, or when many of its files clip.
SCREEN_WEIGHT_HF_DB = SCREEN_REF_HF_DB - 7.0
SCREEN_WEIGHT_FLOOR_DB = -20.0
SCREEN_CLIPPED_FILE = 1e-3  # a file with a larger clip share counts as clipped
SCREEN_WEIGHT_CLIPPED_FILES = 0.2  # share of clipped files that down-weights a source
SCREEN_DOWN_WEIGHT = 0.5  # manifest weight of a down-weighted source's files

AUDIO_EXTENSIONS = (".wav", ".ogg", ".oga", ".flac", ".opus", ".mp3", ".g722")
#: Bump when processing changes so that the per-file decision cache is rebuilt.
PROCESS_VERSION = "1"


class PrepareError(Exception):
    """The pool could not be prepared; the message says why."""


# --------------------------------------------------------------------------------------
# Package rules: which files are used, as what, by which speaker
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeakerRule:
    """Who speaks in a file, from its path (see ``packages.yaml``): where ``match`` (a regex with named
    groups) is found, ``name`` and ``sex`` are filled with its groups, after ``strip`` is removed from
    each and, with ``lower``, lower-cased."""

    match: str
    name: str
    sex: str | None = None
    strip: str | None = None
    lower: bool = False


def speaker_of(rules: Iterable[SpeakerRule], rel: str) -> tuple[str | None, str | None]:
    """``(speaker, sex)`` of the file at ``rel`` by the first rule that matches, else ``(None, None)``."""
    for rule in rules:
        m = re.search(rule.match, rel)
        if m is None:
            continue
        groups = {k: re.sub(rule.strip, "", v) if rule.strip else v for k, v in m.groupdict().items()}
        groups = {k: v.lower() for k, v in groups.items()} if rule.lower else groups
        return rule.name.format(**groups), rule.sex.format(**groups).upper() if rule.sex else None
    return None, None


@dataclass(frozen=True)
class PackageRule:
    """How to use the audio of one Debian package (the fields are described in ``packages.yaml``)."""

    kind: str
    include: str
    exclude: str | None = None
    exclude_reason: str = "not speech/noise (rule)"
    speaker: tuple[SpeakerRule, ...] = ()
    licence_files: str | None = None
    needs_ffmpeg: bool = False
    package: str | None = None
    extract: tuple[str, ...] = ()
    unpack: str | None = None
    unpack_members: str | None = None


def load_package_rules(path: Path) -> dict[str, PackageRule]:
    """The rules of a ``packages.yaml``-style file, speech rules first, in file order."""
    import yaml

    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = {}
    for kind in ("speech", "noise"):
        for name, fields in table[kind].items():
            fields = dict(fields)
            fields["speaker"] = tuple(SpeakerRule(**entry) for entry in fields.get("speaker", ()))
            fields["extract"] = tuple(fields.get("extract", ()))
            rules[name] = PackageRule(kind=kind, **fields)
    return rules


PACKAGE_RULES: dict[str, PackageRule] = load_package_rules(Path(__file__).with_name("packages.yaml"))
#: Rules read by default: voices (the voice or language folder gives the speaker), then sound
#: effects, ambiences and, as a noise class of its own, music (``0ad-music``).
SPEECH_PACKAGES: tuple[str, ...] = tuple(k for k, r in PACKAGE_RULES.items() if r.kind == "speech")
NOISE_PACKAGES: tuple[str, ...] = tuple(k for k, r in PACKAGE_RULES.items() if r.kind == "noise")
#: GCompris voices: one speaker per language folder (regional variants merged).
GCOMPRIS_SPEAKER = (SpeakerRule(match=r"^(?P<folder>[^/]+)/", name="gcompris-{folder}", strip=r"[_@].*$"),)


# --------------------------------------------------------------------------------------
# Small DSP helpers
# --------------------------------------------------------------------------------------


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average (channels, samples) to a float32 (samples,) signal; 1-D input is returned as is."""
    x = np.asarray(audio, dtype=np.float32)
    return x.mean(axis=0, dtype=np.float32) if x.ndim == 2 else x


def trim_silence(
    x: np.ndarray,
    sr: int,
    top_db: float = 40.0,
    floor_dbfs: float = TRIM_FLOOR_DBFS,
    margin_s: float = TRIM_MARGIN_S,
    frame_s: float = 0.02,
) -> np.ndarray:
    """Cut leading and trailing silence from a mono signal.

    A 20 ms frame (10 ms hop) is active when its power is within ``top_db`` of the loudest frame
    and above ``floor_dbfs``; the signal is cut ``margin_s`` before the first and after the last
    active frame. An all-silent signal gives an empty array.
    """
    x = np.asarray(x, dtype=np.float32)
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, frame // 2)
    if x.size == 0:
        return x
    if x.size < frame:
        frame = x.size
    cs = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    starts = np.arange(0, x.size - frame + 1, hop)
    power = (cs[starts + frame] - cs[starts]) / frame
    db = 10.0 * np.log10(power + 1e-20)
    threshold = max(float(db.max()) - top_db, floor_dbfs)
    active = np.flatnonzero(db > threshold)
    if active.size == 0:
        return x[:0]
    margin = int(round(margin_s * sr))
    start = max(0, int(starts[active[0]]) - margin)
    end = min(x.size, int(starts[active[-1]]) + frame + margin)
    return x[start:end]


def fix_level(x: np.ndarray) -> np.ndarray:
    """Lower clips that would clip (peak > MAX_PEAK) and raise very quiet ones to TARGET_PEAK."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > MAX_PEAK:
        return (x * (MAX_PEAK / peak)).astype(np.float32)
    if 0.0 < peak < QUIET_PEAK:
        return (x * (TARGET_PEAK / peak)).astype(np.float32)
    return x


def screen_speech(x: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, float]:
    """Cleanliness figures of a speech signal: ``hf_db``, ``floor_db``, ``clip`` (see the constants).

    ``hf_db``: energy above SCREEN_HF_HZ over the total energy of the active frames (dB; -120
    when nothing is active); ``floor_db``: 10th minus 90th percentile of the frame RMS in dB,
    frames below SCREEN_SILENT_DBFS (digital silence) left out; ``clip``: share of samples at or
    above SCREEN_CLIP_LEVEL.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < SCREEN_FRAME:
        x = np.pad(x, (0, SCREEN_FRAME - x.size))
    n_frames = 1 + (x.size - SCREEN_FRAME) // SCREEN_HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, SCREEN_FRAME)[::SCREEN_HOP][:n_frames]
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-24)
    live = db[db > SCREEN_SILENT_DBFS]
    floor = float(np.percentile(live, 10) - np.percentile(live, 90)) if live.size else 0.0
    active = frames[(db > db.max() - SCREEN_ACTIVE_DB) & (db > SCREEN_SILENT_DBFS)]
    if active.size:
        power = np.abs(np.fft.rfft(active * np.hanning(SCREEN_FRAME), axis=1)) ** 2
        freqs = np.fft.rfftfreq(SCREEN_FRAME, 1.0 / sr)
        hf = float(10.0 * np.log10(power[:, freqs >= SCREEN_HF_HZ].sum() / (power.sum() + 1e-30) + 1e-12))
    else:
        hf = -120.0
    clip = float(np.mean(np.abs(x) >= SCREEN_CLIP_LEVEL)) if x.size else 0.0
    return {"hf_db": round(max(hf, -120.0), 2), "floor_db": round(floor, 2), "clip": round(clip, 6)}


def screen_file_reason(fig: dict[str, float]) -> str | None:
    """Why a speech file fails the screening badly (``None``: it passes)."""
    if fig["hf_db"] < SCREEN_FILE_MIN_HF_DB:
        return "screened: band-limited"
    if fig["floor_db"] > SCREEN_FILE_MAX_FLOOR_DB:
        return "screened: noise floor"
    if fig["clip"] > SCREEN_FILE_MAX_CLIP:
        return "screened: clipped"
    return None


def screen_decision(figures: list[dict[str, float]]) -> dict:
    """Keep, down-weight or drop a speech source from the figures of all its decoded files.

    Returns the medians (``hf_db``, ``hf_vs_ref_db`` against LibriSpeech, ``floor_db``, ``clip``),
    ``clipped_files`` (share above SCREEN_CLIPPED_FILE), ``decision`` (``keep`` /
    ``down-weight`` / ``drop``), the manifest ``weight`` and the ``reasons``.
    """
    if not figures:
        return {"files": 0, "decision": "keep", "weight": 1.0, "reasons": []}
    hf = float(np.median([f["hf_db"] for f in figures]))
    floor = float(np.median([f["floor_db"] for f in figures]))
    clip = float(np.median([f["clip"] for f in figures]))
    clipped = float(np.mean([f["clip"] > SCREEN_CLIPPED_FILE for f in figures]))
    drop, weigh = [], []
    band = f"energy above {SCREEN_HF_HZ:.0f} Hz {hf - SCREEN_REF_HF_DB:+.1f} dB vs LibriSpeech"
    if hf < SCREEN_DROP_HF_DB:
        drop.append(f"band-limited: {band}")
    elif hf < SCREEN_WEIGHT_HF_DB:
        weigh.append(f"narrow band: {band}")
    if floor > SCREEN_DROP_FLOOR_DB:
        drop.append(f"noisy: median floor {floor:.1f} dB")
    elif floor > SCREEN_WEIGHT_FLOOR_DB:
        weigh.append(f"noise floor: median {floor:.1f} dB")
    if clip > SCREEN_DROP_CLIP:
        drop.append(f"clipped: median clip share {clip:.4f}")
    elif clipped > SCREEN_WEIGHT_CLIPPED_FILES:
        weigh.append(f"clipping: {clipped:.0%} of the files clip")
    decision = "drop" if drop else "down-weight" if weigh else "keep"
    return {
        "files": len(figures),
        "hf_db": round(hf, 2),
        "hf_vs_ref_db": round(hf - SCREEN_REF_HF_DB, 2),
        "floor_db": round(floor, 2),
        "clip": round(clip, 6),
        "clipped_files": round(clipped, 4),
        "decision": decision,
        "weight": 0.0 if drop else SCREEN_DOWN_WEIGHT if weigh else 1.0,
        "reasons": drop + weigh,
    }


def _shaped_noise(
    n: int, sr: int, exponent: float, rng: np.random.Generator, f_min: float = 10.0
) -> np.ndarray:
    """Gaussian noise whose power spectral density falls as 1/f**exponent (above ``f_min``)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    freqs[0] = f_min
    spec *= np.maximum(freqs, f_min) ** (-exponent / 2.0)
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise (flat spectrum), unit RMS."""
    return _unit_rms(rng.standard_normal(n))


def pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise (PSD ~ 1/f, -3 dB per octave), unit RMS."""
    return _unit_rms(_shaped_noise(n, sr, 1.0, rng))


def brown_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Brown(ian) noise (PSD ~ 1/f^2, -6 dB per octave), unit RMS."""
    return _unit_rms(_shaped_noise(n, sr, 2.0, rng))


def mains_hum(n: int, sr: int, rng: np.random.Generator, mains_hz: float = 50.0) -> np.ndarray:
    """Mains hum: a 50 or 60 Hz fundamental with decaying, randomly weighted harmonics.

    Odd harmonics are favoured (transformer buzz), the frequency drifts slowly by a few tenths
    of a percent and the amplitude is gently modulated; unit RMS.
    """
    t = np.arange(n) / sr
    drift = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.02, 0.1) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * mains_hz * np.cumsum(drift) / sr
    n_harm = int(min(40, (sr / 2 - 200) // mains_hz))
    decay = rng.uniform(0.6, 1.6)
    y = np.zeros(n)
    for k in range(1, n_harm + 1):
        amp = k ** (-decay) * rng.uniform(0.3, 1.0) * (1.0 if k % 2 else rng.uniform(0.1, 0.6))
        y += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    y *= 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t)
    return _unit_rms(y)


def synth_noise(kind: str, seconds: float, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """One seeded synthetic noise clip (``white``/``pink``/``brown``/``hum``) at SYNTH_RMS_DBFS."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    if kind == "white":
        y = white_noise(n, rng)
    elif kind == "pink":
        y = pink_noise(n, sr, rng)
    elif kind == "brown":
        y = brown_noise(n, sr, rng)
    elif kind == "hum":
        y = mains_hum(n, sr, rng, mains_hz=float(rng.choice([50.0, 60.0])))
    else:
        raise ValueError(f"unknown synthetic noise kind {kind!r}")
    y = y * 10 ** (SYNTH_RMS_DBFS / 20)
    return np.clip(y, -MAX_PEAK, MAX_PEAK).astype(np.float32)


def _unit_rms(y: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(y**2))) if y.size else 0.0
    return y / rms if rms > 0 else y


# --------------------------------------------------------------------------------------
# Licences
# --------------------------------------------------------------------------------------

_FREE_LICENCE = re.compile(
    r"^(cc-by(-sa)?(-\d(\.\d)?)?|cc-?0(-1\.0)?|gpl(-\d(\.\d)?\+?)?|lgpl[-\w.+]*|gfdl(-niv)?(-\d\.\d)?\+?"
    r"|public-?domain|mit|expat|bsd[-\w]*|zlib|apache-?2\.0|isc|unlicense|wtfpl|artistic[-\w.]*"
    r"|ofl[-\w.]*|sil-[\w.-]+|fal(-\d\.\d)?)$",
    re.I,
)
_NON_FREE_HINT = re.compile(r"(^|[-_ ])(nc|nd)([-_ ]|$)|non-?commercial|no-?deriv", re.I)


def licence_allows_model(licence: str) -> tuple[bool, str]:
    """Whether a DEP-5 licence expression allows distributing a model trained on the material.

    ``A or B``: any alternative suffices; ``A and B``: all parts must be free. Free: CC BY,
    CC BY-SA, CC0, GPL/LGPL, public domain, permissive licences. Anything non-commercial,
    no-derivatives or unknown is refused, and so is material offered only under the GFDL: its
    terms (invariant sections, the licence text with every copy) fit neither audio nor a trained
    model. One rule for every source (Debian packages and the shared folders alike). Returns
    ``(ok, reason)``.
    """
    expr = (licence or "").strip()
    if not expr:
        return False, "no licence found"
    if _NON_FREE_HINT.search(expr):
        return False, f"non-free licence ({expr})"
    gfdl_only = True
    for alternative in re.split(r"\s+or\s+", expr, flags=re.I):
        parts = [p.strip() for p in re.split(r"\s+and\s+|,", alternative, flags=re.I) if p.strip()]
        parts = [re.sub(r"\s+with\s+.*$", "", p, flags=re.I) for p in parts]
        if parts and all(p.upper().startswith("GFDL") for p in parts):
            continue
        gfdl_only = False
        if parts and all(_FREE_LICENCE.match(p) for p in parts):
            return True, "free licence"
    return False, "GFDL-only" if gfdl_only else f"licence unclear ({expr})"


_LICENCE_TOKENS: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (re.compile(r"\bCC-?0\b|Creative\s+Commons\s+Zero", re.I), lambda m: "CC0-1.0"),
    (
        re.compile(
            r"\b(?:CC|Creative\s+Commons?)(?:\s+Licen[cs]e)?[\s-]*(?:BY|Attribution)"
            r"((?:[\s-]*(?:NC|Non-?Commercial|ND|No-?Deriv\w*|SA|Share-?\s?Alike))*)"
            r"(?:[\s-]*(\d\.\d))?",
            re.I,
        ),
        lambda m: "CC-BY"
        + "".join(
            "-" + ("SA" if t[0] in "sS" else t[:2].upper())
            for t in re.findall(r"NC|Non-?Commercial|ND|No-?Deriv\w*|SA|Share-?\s?Alike", m.group(1), re.I)
        )
        + (f"-{m.group(2)}" if m.group(2) else ""),
    ),
    (
        re.compile(r"\b(L?GPL|GFDL)\s*(?:v(?:ersion)?\s*)?(\d(?:\.\d)?)?\s*(\+|or\s+later)?", re.I),
        lambda m: m.group(1).upper()
        + (f"-{m.group(2)}" if m.group(2) else "")
        + ("+" if m.group(2) and m.group(3) else ""),
    ),
    (re.compile(r"\bpublic[\s-]+domain\b", re.I), lambda m: "public-domain"),
    (re.compile(r"\bFree\s*Art\b|\bFAL\b", re.I), lambda m: "FAL"),
)


def normalise_licence(text: str) -> str:
    """SPDX-like id(s) of a free-text licence statement (authors and parentheses ignored).

    ``"CC BY 3.0 (SDLx, freesound 259988)"`` -> ``CC-BY-3.0``, ``"CC0 (...)"`` -> ``CC0-1.0``,
    ``"CC BY (...)"`` -> ``CC-BY`` (no version given), ``"Jane Doe 2011 / GPL V3+"`` -> ``GPL-3+``,
    ``"... Creative Common License BY-SA"`` -> ``CC-BY-SA``, ``"Public Domain"`` -> ``public-domain``.
    Several licences are joined with `` and `` (each must allow the use); text with no known
    licence is returned stripped, which :func:`licence_allows_model` then refuses.
    """
    body = re.sub(r"\([^()]*\)", " ", text or "")
    body = body.rsplit(" / ", 1)[-1] if " / " in body else body  # "author / licence"
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for rx, fmt in _LICENCE_TOKENS:
        for m in rx.finditer(body):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            taken.append((m.start(), m.end()))
            found.append((m.start(), fmt(m)))
    ids = list(dict.fromkeys(lic for _, lic in sorted(found)))
    return " and ".join(ids) if ids else (text or "").strip()


@dataclass
class CopyrightInfo:
    """A package's copyright file: DEP-5 stanzas ``(patterns, licence)`` or a guessed licence."""

    path: str
    stanzas: list[tuple[list[str], str]] = field(default_factory=list)
    fallback: str | None = None  # licence guessed from a non machine-readable file

    def licence_for(self, rel: str, forced_pattern: str | None = None) -> tuple[str | None, str]:
        """Licence of installed file ``rel`` and the evidence (the matching ``Files:`` pattern)."""
        if forced_pattern is not None:
            for patterns, lic in self.stanzas:
                if forced_pattern in patterns:
                    return lic, f"{self.path}: Files: {forced_pattern}"
        best: tuple[str | None, str] = (None, f"{self.path}: no matching Files stanza")
        best_score = -1
        for patterns, lic in self.stanzas:
            for pat in patterns:
                score = dep5_match(pat, rel)
                # The most specific pattern wins; among equals the later stanza (DEP-5 rule).
                if score is not None and score >= best_score:
                    best, best_score = (lic, f"{self.path}: Files: {pat}"), score
        if best[0] is None and self.fallback:
            return self.fallback, f"{self.path}: free-text licence"
        return best


def dep5_match(pattern: str, rel: str) -> int | None:
    """Match a DEP-5 ``Files:`` pattern (an upstream source path) against an installed path.

    Upstream paths are not installed paths, so the pattern is compared with every suffix of
    ``rel`` (``data/sfx/x.ogg`` matches ``usr/share/games/stk/data/sfx/x.ogg``); patterns with at
    least three components may also lose their first one (``mtg/mods/a/*`` ~ ``mods/a/*``).
    Returns the specificity of the match (literal characters of the pattern) or ``None``.
    Because this mapping is fuzzy, callers prefer the most specific match over stanza order
    (a source folder ``hedgewars/*`` must not beat ``share/hedgewars/Data/Sounds/*``).
    """
    parts = rel.split("/")
    suffixes = ["/".join(parts[k:]) for k in range(len(parts))]
    candidates = [pattern]
    pparts = pattern.split("/")
    if len(pparts) >= 3:
        candidates.append("/".join(pparts[1:]))
    for cand in candidates:
        if any(fnmatch.fnmatchcase(s, cand) for s in suffixes):
            return len(re.sub(r"[*?]", "", cand))
    return None


def parse_copyright(text: str, path: str = "copyright") -> CopyrightInfo:
    """Parse a Debian copyright file (machine-readable DEP-5, else a free-text GPL/CC guess)."""
    info = CopyrightInfo(path=path)
    if re.search(r"^Format:.*copyright-format", text, re.M):
        for para in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in para.splitlines():
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m and not line[:1].isspace():
                    key = m.group(1).lower()
                    fields[key] = m.group(2)
                elif key is not None:
                    fields[key] += "\n" + line
            if "files" in fields and "license" in fields:
                patterns = fields["files"].split()
                licence = fields["license"].split("\n", 1)[0].strip()
                info.stanzas.append((patterns, licence))
    else:
        info.fallback = guess_licence_from_text(text)
    return info


def guess_licence_from_text(text: str) -> str | None:
    """Guess the main licence of a free-text copyright file (GPL version, CC, public domain)."""
    flat = " ".join(text.split())
    m = re.search(r"GNU (Lesser |Library )?General Public License(.{0,250}?)version (\d)", flat, re.I)
    if m:
        prefix = "LGPL" if m.group(1) else "GPL"
        plus = "+" if re.search(r"any later version", flat[m.end() : m.end() + 200], re.I) else ""
        return f"{prefix}-{m.group(3)}{plus}"
    m = re.search(r"Creative Commons Attribution(-| )?(ShareAlike)?[^0-9]{0,40}(\d\.\d)", flat, re.I)
    if m:
        return f"CC-BY{'-SA' if m.group(2) else ''}-{m.group(3)}"
    if re.search(r"public domain", flat, re.I):
        return "public-domain"
    return None


def _licence_from_readme(readme: Path, folder: str) -> str | None:
    """Licence column of the shared README's table row for ``folder`` (e.g. ``noise/x/``)."""
    if not readme.is_file():
        return None
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].rstrip("/") == folder.rstrip("/"):
            lic = cells[-1]
            lic = re.sub(r"\bCC BY-SA\b", "CC-BY-SA", lic)
            lic = re.sub(r"\bCC BY\b", "CC-BY", lic)
            lic = re.sub(r"\s+(\d\.\d)", r"-\1", lic)
            return "CC0-1.0" if lic.upper() == "CC0" else lic
    return None


# --------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------


def _find_deb(deb_dir: Path, name: str) -> Path | None:
    debs = sorted(deb_dir.glob(f"{name}_*.deb"))
    return debs[-1] if debs else None


def package_download_size(name: str) -> int | None:
    """Size in bytes of the .deb ``apt-get download NAME`` would fetch (``--print-uris``), or None."""
    if shutil.which("apt-get") is None:
        return None
    res = subprocess.run(["apt-get", "download", "--print-uris", name], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].startswith("'") and fields[2].isdigit():
            return int(fields[2])
    return None


def announce_downloads(packages: Iterable[str], cache_dir: Path) -> list[tuple[str, int | None]]:
    """Print (stderr, always) one line per package not yet in the cache with its size, and the total.

    Returns ``[(package, bytes or None)]`` of the packages that will be downloaded.
    """
    deb_dir = cache_dir / "debs"
    todo = [n for n in dict.fromkeys(packages) if _find_deb(deb_dir, n) is None]
    plan = [(n, package_download_size(n)) for n in todo]
    if plan:
        for n, size in plan:
            shown = f"{size / 1e6:9.1f} MB" if size is not None else "  size unknown"
            print(f"[prepare] to download: {n:<36} {shown}", file=sys.stderr, flush=True)
        total = sum(size or 0 for _, size in plan)
        unknown = sum(size is None for _, size in plan)
        print(
            f"[prepare] to download: {len(plan)} package(s), {total / 1e6:.1f} MB in total"
            + (f" (+{unknown} of unknown size)" if unknown else ""),
            file=sys.stderr,
            flush=True,
        )
    return plan


def fetch_package(name: str, cache_dir: Path, members: tuple[str, ...] = ()) -> Path:
    """Download (``apt-get download``) and extract (``dpkg-deb -x``) a package, cached.

    The .deb is kept in ``cache_dir/debs`` and the tree in ``cache_dir/pkgs/NAME``; both are
    reused when present. ``members`` (tar shell patterns, e.g. ``./usr/share/doc/*``) extracts
    only those members (``dpkg-deb --fsys-tarfile | tar -x``). Returns the extracted root;
    raises :class:`PrepareError`.
    """
    deb_dir = cache_dir / "debs"
    pkg_dir = cache_dir / "pkgs"
    deb_dir.mkdir(parents=True, exist_ok=True)
    pkg_dir.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(deb_dir, name)
    if deb is None:
        if shutil.which("apt-get") is None:
            raise PrepareError(f"{name}: apt-get not available (not a Debian-like system)")
        res = subprocess.run(["apt-get", "download", name], cwd=deb_dir, capture_output=True, text=True)
        deb = _find_deb(deb_dir, name)
        if res.returncode != 0 or deb is None:
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise PrepareError(
                f"{name}: apt-get download failed ({msg[-1] if msg else res.returncode}); "
                "run `apt-get update` if the package is unknown"
            )
    root = pkg_dir / name
    marker = root / ".extracted"
    stamp = deb.name + (" " + " ".join(members) if members else "")
    if marker.is_file() and marker.read_text().strip() == stamp:
        return root
    if shutil.which("dpkg-deb") is None:
        raise PrepareError(f"{name}: dpkg-deb not available")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=pkg_dir))
    try:
        if members:
            _extract_members(deb, tmp, members, name)
        else:
            res = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
            if res.returncode != 0:
                raise PrepareError(f"{name}: dpkg-deb -x failed: {res.stderr.strip()}")
        (tmp / ".extracted").write_text(stamp + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _extract_members(deb: Path, dest: Path, members: tuple[str, ...], name: str) -> None:
    """Extract the tar members matching ``members`` of ``deb``'s data into ``dest``."""
    if shutil.which("tar") is None:
        raise PrepareError(f"{name}: tar not available")
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        res = subprocess.run(
            ["tar", "-x", "-C", str(dest), "--wildcards", *members],
            stdin=dpkg.stdout,
            capture_output=True,
            text=True,
        )
    finally:
        if dpkg.stdout is not None:
            dpkg.stdout.close()
        dpkg_rc = dpkg.wait()
    if res.returncode != 0 or dpkg_rc != 0:
        raise PrepareError(f"{name}: extracting {' '.join(members)} failed: {res.stderr.strip()[-300:]}")


def read_openttd_cat(data: bytes) -> list[tuple[str, bytes]]:
    """Entries ``(name, wav bytes)`` of an OpenTTD sound set (``.cat``).

    Layout: a table of ``(uint32 offset, uint32 size)`` little-endian pairs (the first offset,
    with its top bit as a format flag, is the table's length), then per entry a length byte, a
    NUL-terminated name (OpenSFX: title, authors and licence) and ``size`` bytes of RIFF WAVE.
    """
    if len(data) < 8:
        raise ValueError("not an OpenTTD .cat file (too short)")
    table = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    if table % 8 or not 8 <= table <= len(data):
        raise ValueError("not an OpenTTD .cat file (bad offset table)")
    entries = []
    for i in range(table // 8):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        if off >= len(data):
            raise ValueError(f"entry {i}: offset beyond the end of the file")
        name_len = data[off]
        name = data[off + 1 : off + 1 + name_len].split(b"\0", 1)[0].decode("utf-8", "replace")
        body = data[off + 1 + name_len : off + 1 + name_len + size]
        entries.append((name, body))
    return entries


def _opensfx_member(index: int, name: str) -> tuple[str, str]:
    """File name and licence text of an OpenSFX entry (``"Title". By X. License: CC ....``)."""
    m = re.match(r'\s*"([^"]*)"', name)
    title = m.group(1) if m else name[:40]
    lic = re.search(r"Licen[cs]e:\s*(.*?)(?:\.\s|\.?$)", name)
    return f"{index:03d}-{_slug(title).lower() or 'untitled'}.wav", lic.group(1).strip() if lic else ""


UNPACKED = "_unpacked"
LICENCES_NAME = "licences.json"  # per-member licences of an unpacked container (OpenSFX)


def unpack_containers(root: Path, pattern: str, members: str | None = None) -> int:
    """Extract the audio members of the containers under ``root`` whose path matches ``pattern``.

    ``.zip`` archives (members matching ``members``, all when None) and OpenTTD ``.cat`` sound
    sets (every RIFF entry, with its licence from the entry name in ``licences.json``) go to
    ``root/_unpacked/<container name>/``; a ``.done`` stamp makes this a no-op the next time.
    Returns the number of files extracted now. Raises :class:`PrepareError`.
    """
    rx = re.compile(pattern)
    member_rx = re.compile(members) if members else None
    written = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and UNPACKED not in p.parts):
        rel = path.relative_to(root).as_posix()
        if not rx.search(rel):
            continue
        dest = root / UNPACKED / path.name
        stamp = f"{path.stat().st_size} {members}"
        done = dest / ".done"
        if done.is_file() and done.read_text().strip() == stamp:
            continue
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        try:
            if path.suffix.lower() == ".zip":
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.is_dir() or (member_rx is not None and not member_rx.search(info.filename)):
                            continue
                        zf.extract(info, dest)
                        written += 1
            elif path.suffix.lower() == ".cat":
                licences = {}
                for i, (name, body) in enumerate(read_openttd_cat(path.read_bytes())):
                    fname, lic = _opensfx_member(i, name)
                    wanted = member_rx is None or member_rx.search(fname) is not None
                    if not body.startswith(b"RIFF") or not wanted:
                        continue
                    (dest / fname).write_bytes(body)
                    licences[(dest / fname).relative_to(root).as_posix()] = {"text": lic, "entry": name}
                    written += 1
                (dest / LICENCES_NAME).write_text(json.dumps(licences, indent=1, sort_keys=True) + "\n")
            else:
                raise PrepareError(f"{rel}: unknown container type")
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise PrepareError(f"{rel}: cannot unpack ({exc})") from None
        done.write_text(stamp + "\n")
    return written


def _member_licences(root: Path) -> dict[str, dict]:
    """``{rel: {"text", "entry"}}`` of every ``licences.json`` under ``root/_unpacked``."""
    out: dict[str, dict] = {}
    for path in sorted((root / UNPACKED).glob(f"*/{LICENCES_NAME}")):
        out.update(json.loads(path.read_text()))
    return out


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def decode_ffmpeg(path: Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file ffmpeg understands (raw ``.g722`` included) to mono float32 at ``sr``."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    if path.suffix.lower() == ".g722":
        cmd += ["-f", "g722"]
    cmd += ["-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"]
    try:
        res = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError:
        raise AudioError(f"{path}: ffmpeg not found") from None
    if res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()[-300:]
        raise AudioError(f"{path}: ffmpeg failed ({err})")
    return np.frombuffer(res.stdout, dtype="<f4").astype(np.float32)


def load_mono_16k(path: Path) -> np.ndarray:
    """Read an audio file as mono float32 at 16 kHz (soundfile, ffmpeg for G.722 and fallbacks)."""
    if path.suffix.lower() == ".g722":
        return decode_ffmpeg(path)
    try:
        audio, sr, _ = read_audio(path)
    except AudioError:
        if shutil.which("ffmpeg") is None:
            raise
        return decode_ffmpeg(path)
    return resample(to_mono(audio), sr, SAMPLE_RATE)


# --------------------------------------------------------------------------------------
# Pool building
# --------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One input file of a source."""

    path: Path
    rel: str  # posix path inside the source (naming, hashing)
    out_stem: str  # output path without extension, relative to the pool root
    licence: str
    speaker: str | None = None
    sex: str | None = None


@dataclass
class _Source:
    name: str
    kind: str
    items: list[_Item] = field(default_factory=list)
    licence_evidence: set[str] = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)
    excluded_reason: str | None = None  # the whole source is excluded
    cut_split: bool = False
    concat: bool = False  # short clips concatenated per (speaker, licence) into utterances
    # filled while processing
    outputs: list[dict] = field(default_factory=list)  # manifest rows without split (split may be preset)
    short: list[tuple[_Item, float]] = field(default_factory=list)
    screens: list[dict] = field(default_factory=list)  # speech screening figures of every decoded file
    screening: dict | None = None  # screen_decision() of a speech source
    clips: list[tuple[_Item, float]] = field(default_factory=list)  # concat sources: usable clips


def _slug(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", source).strip("-")


def _clean_rel(rel: str) -> str:
    rel = re.sub(rf"^{UNPACKED}/", "", rel)
    rel = re.sub(r"^usr/share/(games/)?", "", rel)
    rel = str(Path(rel).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9._/-]+", "_", rel)


def _hkey(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def file_digest(path: Path, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (sha1 for dedup, sha256 for records)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _duration(path: Path) -> float:
    info = sf.info(str(path))
    return round(info.frames / info.samplerate, 6)


class _Log:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[prepare] {msg}", file=sys.stderr, flush=True)


def _librispeech_source(data_dir: Path, readme: Path, log: _Log) -> tuple[_Source, dict[str, str]]:
    """LibriSpeech items and ``{speaker: sex}`` from SPEAKERS.TXT."""
    src = _Source(LIBRISPEECH_SOURCE, "speech")
    folder = data_dir / LIBRISPEECH_DIR
    if not folder.is_dir():
        src.excluded_reason = f"not found: {folder}"
        return src, {}
    licence = _licence_from_readme(readme, LIBRISPEECH_DIR)
    if licence:
        src.licence_evidence.add(f"shared README.md: {licence}")
    else:
        licence = SHARED_LICENCES[LIBRISPEECH_DIR]
        src.licence_evidence.add(f"gtcrn.training.prepare.SHARED_LICENCES: {licence}")
    sexes: dict[str, str] = {}
    spk_file = folder / "SPEAKERS.TXT"
    if spk_file.is_file():
        for line in spk_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(";") or "|" not in line:
                continue
            cells = [c.strip() for c in line.split("|", 4)]
            if len(cells) >= 2 and cells[1] in ("M", "F"):
                sexes[cells[0]] = cells[1]
    for path in sorted(folder.glob("*.flac")):
        spk = path.name.split("-")[0]
        if spk not in sexes:
            src.skipped["speaker not in SPEAKERS.TXT"] += 1
            continue
        src.items.append(
            _Item(
                path,
                path.name,
                f"speech/{LIBRISPEECH_SOURCE}/{spk}/{path.stem}",
                licence,
                f"librispeech-{spk}",
                sexes[spk],
            )
        )
    log(f"{LIBRISPEECH_SOURCE}: {len(src.items)} utterances")
    return src, {f"librispeech-{k}": v for k, v in sexes.items()}


def read_shared_manifest(folder: Path) -> dict[str, dict]:
    """``{file: entry}`` of a shared folder's ``manifest.json`` (a list of ``{file, licence, ...}``).

    Returns ``{}`` when there is none; raises :class:`PrepareError` when it is malformed.
    """
    path = folder / SHARED_MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {str(e["file"]): dict(e) for e in entries}
    except (ValueError, TypeError, KeyError) as exc:
        raise PrepareError(f"{path}: not a list of {{file, licence}} entries ({exc})") from None


def _per_file_licence(src: _Source, folder: Path, rel: str, entries: dict[str, dict]) -> str | None:
    """Normalised licence of ``rel`` from ``entries`` (a shared manifest), or None when refused.

    Refusals are counted in ``src.skipped``; accepted licences are added to the evidence.
    """
    entry = entries.get(rel)
    if entry is None:
        src.skipped[f"not in {SHARED_MANIFEST}"] += 1
        return None
    text = str(entry.get("licence", ""))
    licence = normalise_licence(text)
    ok, why = licence_allows_model(licence)
    if not ok:
        src.skipped[why] += 1
        return None
    src.licence_evidence.add(f"{folder.name}/{SHARED_MANIFEST}: {text!r} -> {licence}")
    return licence


def _shared_noise_sources(data_dir: Path, readme: Path) -> list[_Source]:
    """One source per ``noise/<folder>``: per-file licences from its ``manifest.json`` if any, else
    the folder's licence from the shared README (or :data:`SHARED_LICENCES`)."""
    out = []
    noise_dir = data_dir / "noise"
    if not noise_dir.is_dir():
        return out
    for folder in sorted(p for p in noise_dir.iterdir() if p.is_dir()):
        src = _Source(folder.name, "noise")
        entries = read_shared_manifest(folder)
        licence = None
        if not entries:
            licence = _licence_from_readme(readme, f"noise/{folder.name}/")
            if licence:
                src.licence_evidence.add(f"shared README.md: {licence}")
            else:
                licence = SHARED_LICENCES.get(f"noise/{folder.name}")
                src.licence_evidence.add(f"gtcrn.training.prepare.SHARED_LICENCES: {licence}")
            ok, why = licence_allows_model(licence or "")
            if not ok:
                src.excluded_reason = why
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                rel = path.relative_to(folder).as_posix()
                lic = _per_file_licence(src, folder, rel, entries) if entries else licence
                if lic is None and entries:
                    continue
                src.items.append(_Item(path, rel, f"noise/{_slug(src.name)}/{_clean_rel(rel)}", lic or ""))
        if entries and not src.items:
            skipped = ", ".join(f"{k}: {v}" for k, v in src.skipped.items())
            src.excluded_reason = f"no usable audio ({skipped})"
        out.append(src)
    return out


def _rir_sources(data_dir: Path) -> list[_Source]:
    """Measured room impulse responses of ``rir/`` (licence per file from its ``manifest.json``).

    The source of a file is the first of :data:`RIR_SOURCES` whose pattern matches the manifest's
    ``source`` field or the file name (``real-rir`` otherwise).
    """
    folder = data_dir / RIR_DIR
    if not folder.is_dir():
        return []
    entries = read_shared_manifest(folder)
    by_name: dict[str, _Source] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        rel = path.name
        entry = entries.get(rel, {})
        name = next(
            (
                n
                for rx, n in RIR_SOURCES
                if re.search(rx, str(entry.get("source", ""))) or re.search(rx, rel, re.I)
            ),
            "real-rir",
        )
        src = by_name.setdefault(name, _Source(name, "rir"))
        lic = _per_file_licence(src, folder, rel, entries)
        if lic is not None:
            src.items.append(_Item(path, rel, f"rir/{_slug(name)}/{_clean_rel(rel)}", lic))
    return [by_name[n] for n in sorted(by_name)]


def _gcompris_source(data_dir: Path, log: _Log) -> _Source:
    """GCompris voice clips ``<language>/<activity>/<clip>.flac``; speaker ``gcompris-<language>``.

    Regional variants are merged (``pt``/``pt_BR`` -> ``gcompris-pt``, ``zh_CN``/``zh_TW`` ->
    ``gcompris-zh``); the clips are concatenated into utterances (:func:`_process_concat_source`).
    """
    src = _Source(GCOMPRIS_SOURCE, "speech", concat=True)
    folder = data_dir / GCOMPRIS_DIR
    if not folder.is_dir():
        src.excluded_reason = f"not found: {folder}"
        return src
    entries = read_shared_manifest(folder)
    if not entries:
        src.excluded_reason = f"no {SHARED_MANIFEST} with per-file licences in {folder}"
        return src
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        speaker, _ = speaker_of(GCOMPRIS_SPEAKER, rel)
        if speaker is None:
            src.skipped["not in a language folder"] += 1
            continue
        lic = _per_file_licence(src, folder, rel, entries)
        if lic is not None:
            src.items.append(_Item(path, rel, "", lic, speaker, None))
    log(f"{GCOMPRIS_SOURCE}: {len(src.items)} clips, skipped {dict(src.skipped)}")
    return src


def _debian_source(name: str, cache_dir: Path, log: _Log) -> _Source:
    rule = PACKAGE_RULES[name]
    package = rule.package or name
    src = _Source(f"debian:{name}", rule.kind)
    if rule.needs_ffmpeg and shutil.which("ffmpeg") is None:
        src.excluded_reason = "ffmpeg not found (needed to decode G.722): apt-get install ffmpeg"
        log(f"{src.name}: skipped, {src.excluded_reason}")
        return src
    try:
        root = fetch_package(package, cache_dir, rule.extract)
        if rule.unpack:
            n = unpack_containers(root, rule.unpack, rule.unpack_members)
            if n:
                log(f"{src.name}: unpacked {n} files from containers")
    except PrepareError as exc:
        src.excluded_reason = str(exc)
        log(f"{src.name}: skipped, {exc}")
        return src
    cr_path = root / "usr/share/doc" / package / "copyright"
    if not cr_path.is_file():
        src.excluded_reason = "no copyright file"
        return src
    info = parse_copyright(
        cr_path.read_text(encoding="utf-8", errors="replace"), f"usr/share/doc/{package}/copyright"
    )
    member_licences = _member_licences(root) if rule.unpack else {}
    include = re.compile(rule.include)
    exclude = re.compile(rule.exclude) if rule.exclude else None
    seen: set[str] = set()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if not include.search(rel):
            src.skipped["other audio (music/UI/not in rule)"] += 1
            continue
        if exclude is not None and exclude.search(rel):
            src.skipped[rule.exclude_reason] += 1
            continue
        digest = file_digest(path)
        if digest in seen:
            src.skipped["duplicate file"] += 1
            continue
        seen.add(digest)
        if rel in member_licences:  # a container entry that names its own licence
            licence = normalise_licence(member_licences[rel]["text"])
            evidence = f"{Path(rel).parent.name} entry names: License: {member_licences[rel]['text']}"
        else:
            licence, evidence = info.licence_for(rel, rule.licence_files)
        ok, why = licence_allows_model(licence or "")
        if not ok:
            src.skipped[why] += 1
            continue
        src.licence_evidence.add(f"{evidence} -> {licence}")
        speaker, sex = speaker_of(rule.speaker, rel)
        if rule.kind == "speech" and speaker is None:
            speaker = src.name
        stem = f"{rule.kind}/{_slug(src.name)}/{_clean_rel(rel)}"
        src.items.append(_Item(path, rel, stem, licence or "", speaker, sex))
    if not src.items and src.excluded_reason is None:
        src.excluded_reason = (
            "no usable audio (" + ", ".join(f"{k}: {v}" for k, v in src.skipped.items()) + ")"
        )
    log(f"{src.name}: {len(src.items)} candidate files, skipped {dict(src.skipped)}")
    return src


class _DecisionCache:
    """Per-source record of what became of each input (so re-runs skip decoding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict] = {}
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") == PROCESS_VERSION:
                    self.data = raw.get("items", {})
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    def get(self, item: _Item) -> dict | None:
        rec = self.data.get(item.rel)
        if rec is None or rec.get("size") != item.path.stat().st_size:
            return None
        return rec

    def put(self, item: _Item, rec: dict) -> None:
        rec["size"] = item.path.stat().st_size
        self.data[item.rel] = rec
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps({"version": PROCESS_VERSION, "items": self.data}, sort_keys=True))
            os.replace(tmp, self.path)
            self.dirty = False


def _load_raw(item: _Item) -> np.ndarray:
    x = load_mono_16k(item.path)
    return np.nan_to_num(x) if not np.all(np.isfinite(x)) else x


def _load_trimmed(item: _Item, kind: str) -> np.ndarray:
    return _trimmed(_load_raw(item), kind)


def _trimmed(x: np.ndarray, kind: str) -> np.ndarray:
    """Trimmed and levelled speech/noise; impulse responses are returned untouched."""
    if kind == "rir":
        return x
    return fix_level(trim_silence(x, SAMPLE_RATE, top_db=TRIM_TOP_DB[kind]))


def _write_flac(out_dir: Path, rel: str, audio: np.ndarray) -> None:
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype=SUBTYPE)


def _cached(rec: dict | None, kind: str, out_dir: Path) -> bool:
    """Whether a decision-cache record can be reused (speech records must carry the screening)."""
    if rec is None or (kind == "speech" and rec["status"] != "unreadable" and "screen" not in rec):
        return False
    return rec["status"] != "ok" or all((out_dir / o).is_file() for o in rec.get("outputs", []))


def _decide(src: _Source, item: _Item, out_dir: Path, outs: list[str]) -> tuple[dict, int]:
    """Decode, screen (speech), trim and write one item; returns the cache record and files written."""
    try:
        x = _load_raw(item)
    except AudioError as exc:
        return {"status": "unreadable", "error": str(exc)}, 0
    screen = screen_speech(x) if src.kind == "speech" else None
    y = _trimmed(x, src.kind)
    dur = y.size / SAMPLE_RATE
    extra = {"screen": screen} if screen is not None else {}
    min_speech = GCOMPRIS_MIN_CLIP_S if src.concat else MIN_SPEECH_S
    if src.kind == "rir":
        if y.size == 0 or not np.any(y):
            return {"status": "silent"}, 0
    elif y.size == 0 or dur < MIN_EVENT_S or (src.kind == "speech" and dur < min_speech):
        return {"status": "too short" if y.size else "silent", "dur": dur, **extra}, 0
    elif src.kind == "noise" and dur < MIN_NOISE_S:
        return {"status": "short", "dur": dur}, 0
    if screen is not None:
        reason = screen_file_reason(screen)
        if reason is not None:
            return {"status": reason, "dur": dur, **extra}, 0
    if src.concat:  # written later, concatenated with the other clips of its speaker
        return {"status": "ok", "outputs": [], "dur": dur, **extra}, 0
    if src.cut_split and dur >= 2 * CUT_DEV_MIN_S:
        n_dev = max(int(round(DEV_FRACTION * y.size)), int(CUT_DEV_MIN_S * SAMPLE_RATE))
        _write_flac(out_dir, outs[0], y[: y.size - n_dev])
        _write_flac(out_dir, outs[1], y[y.size - n_dev :])
        return {"status": "ok", "outputs": outs, **extra}, 2
    out = f"{item.out_stem}.flac"
    _write_flac(out_dir, out, y)
    return {"status": "ok", "outputs": [out], **extra}, 1


def _process_source(src: _Source, out_dir: Path, cache: _DecisionCache, log: _Log) -> None:
    """Decode, screen, trim and write every item of ``src`` (existing outputs are reused)."""
    written = 0
    for i, item in enumerate(src.items):
        if src.cut_split:
            outs = [f"{item.out_stem}.train.flac", f"{item.out_stem}.dev.flac"]
        else:
            outs = [f"{item.out_stem}.flac"]
        rec = cache.get(item)
        if not _cached(rec, src.kind, out_dir):
            rec, n = _decide(src, item, out_dir, outs)
            written += n
            cache.put(item, rec)
        if "screen" in rec:
            src.screens.append(rec["screen"])
        if rec["status"] == "ok":
            if src.concat:
                src.clips.append((item, float(rec["dur"])))
            for o in rec["outputs"]:
                split = "dev" if o.endswith(".dev.flac") else "train" if o.endswith(".train.flac") else None
                src.outputs.append(_row(o, src, item, _duration(out_dir / o), split))
        elif rec["status"] == "short":
            src.short.append((item, float(rec["dur"])))
        else:
            src.skipped[rec["status"]] += 1
        if (i + 1) % 500 == 0:
            cache.save()
            log(f"{src.name}: {i + 1}/{len(src.items)}")
    cache.save()
    log(f"{src.name}: {len(src.outputs)} files ({written} written), {len(src.short)} short events")


def plan_utterances(clips: list[tuple[str, float]], seed: int, key: str) -> list[list[str]]:
    """Group clips ``(name, seconds)``, in the given order, into utterances of about 4-8 s.

    An utterance is closed once it reaches a seeded target in CONCAT_TARGET_S, or before a clip
    that would take it beyond CONCAT_MAX_S (counting a mean gap per join); a last group shorter
    than the lower target joins the previous one when that stays within CONCAT_MAX_S, else it
    stands alone if it reaches MIN_SPEECH_S and is dropped otherwise. ``key`` seeds the targets.
    """
    rng = np.random.default_rng(int(_hkey(seed, "utterances", key)[:12], 16))
    gap = sum(CONCAT_GAP_S) / 2
    groups: list[list[str]] = []
    lengths: list[float] = []
    cur: list[str] = []
    acc = 0.0
    target = rng.uniform(*CONCAT_TARGET_S)
    for name, dur in clips:
        if cur and acc + gap + dur > CONCAT_MAX_S:
            groups.append(cur)
            lengths.append(acc)
            cur, acc, target = [], 0.0, rng.uniform(*CONCAT_TARGET_S)
        acc += dur + (gap if cur else 0.0)
        cur.append(name)
        if acc >= target:
            groups.append(cur)
            lengths.append(acc)
            cur, acc, target = [], 0.0, rng.uniform(*CONCAT_TARGET_S)
    if cur:
        if acc < CONCAT_TARGET_S[0] and groups and lengths[-1] + gap + acc <= CONCAT_MAX_S:
            groups[-1].extend(cur)
        elif acc >= MIN_SPEECH_S:
            groups.append(cur)
    return groups


def _level_clip(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    return (x * (10 ** (CONCAT_CLIP_RMS_DBFS / 20) / rms)).astype(np.float32) if rms > 0 else x


def _process_concat_source(src: _Source, out_dir: Path, seed: int, log: _Log) -> None:
    """Concatenate the usable clips of each (speaker, licence) of ``src`` into utterances.

    Clips are taken in path order, levelled to CONCAT_CLIP_RMS_DBFS and joined with seeded
    silent gaps (CONCAT_GAP_S); the file name carries the seed and a hash of its clips, so a
    changed grouping never reuses a stale file. Existing files are not rewritten.
    """
    groups: dict[tuple[str, str], list[tuple[_Item, float]]] = defaultdict(list)
    for item, dur in src.clips:
        groups[(item.speaker or src.name, item.licence)].append((item, dur))
    written = 0
    for (speaker, licence), members in sorted(groups.items()):
        members.sort(key=lambda m: m[0].rel)
        by_rel = {m[0].rel: m[0] for m in members}
        plan = plan_utterances([(m[0].rel, m[1]) for m in members], seed, f"{src.name}/{speaker}/{licence}")
        lic_tag = _slug(licence.replace("+", "plus")).lower() or "unknown"
        for k, rels in enumerate(plan):
            digest = _hkey(seed, *rels)[:8]
            rel = f"speech/{_slug(src.name)}/{_slug(speaker)}/s{seed}-{lic_tag}-{k:03d}-{digest}.flac"
            path = out_dir / rel
            if not path.is_file():
                rng = np.random.default_rng(int(_hkey(seed, src.name, rel)[:12], 16))
                pieces: list[np.ndarray] = []
                for j, r in enumerate(rels):
                    if j:
                        pieces.append(np.zeros(int(rng.uniform(*CONCAT_GAP_S) * SAMPLE_RATE), np.float32))
                    pieces.append(_level_clip(_load_trimmed(by_rel[r], "speech")))
                _write_flac(out_dir, rel, fix_level(np.concatenate(pieces)))
                written += 1
            first = by_rel[rels[0]]
            fake = _Item(first.path, rel, rel, licence, speaker, first.sex)
            src.outputs.append(_row(rel, src, fake, _duration(path), None))
    log(f"{src.name}: {len(src.clips)} clips -> {len(src.outputs)} utterances ({written} written)")


def _row(path: str, src: _Source, item: _Item | None, duration: float, split: str | None) -> dict:
    return {
        "path": path,
        "kind": src.kind,
        "split": split,
        "source": src.name,
        "licence": item.licence if item else "",
        "speaker": item.speaker if item and src.kind == "speech" else None,
        "sex": item.sex if item and src.kind == "speech" else None,
        "duration": duration,
        "sample_rate": SAMPLE_RATE,
        "weight": 1.0,
    }


def select_librispeech_dev(
    sexes: dict[str, str], seed: int, per_sex: int = LIBRISPEECH_DEV_PER_SEX
) -> set[str]:
    """Seeded choice of dev speakers, ``per_sex`` men and as many women.

    With fewer speakers (e.g. a small test corpus) at most half of the smaller sex group is
    taken, so both splits keep speakers of both sexes.
    """
    by_sex = {s: sorted(k for k, v in sexes.items() if v == s) for s in ("M", "F")}
    n = min(per_sex, min(len(v) for v in by_sex.values()) // 2)
    rng = np.random.default_rng(seed)
    dev: set[str] = set()
    for s in ("M", "F"):
        ids = by_sex[s]
        dev.update(ids[j] for j in rng.permutation(len(ids))[:n])
    return dev


def select_dev_speakers(durations: dict[str, float], seed: int, fraction: float = DEV_FRACTION) -> set[str]:
    """Seeded greedy choice of dev speakers whose total duration is close to ``fraction``.

    Speakers are visited in a seeded hash order and added while that brings the dev duration
    closer to the target; at least one speaker always stays in train.
    """
    total = sum(durations.values())
    target = fraction * total
    dev: set[str] = set()
    dev_dur = 0.0
    for spk in sorted(durations, key=lambda s: _hkey(seed, "speaker", s)):
        d = durations[spk]
        if len(dev) + 1 >= len(durations):
            break
        if abs(dev_dur + d - target) < abs(dev_dur - target):
            dev.add(spk)
            dev_dur += d
    return dev


def select_dev_files(keys: Iterable[str], seed: int, source: str, fraction: float = DEV_FRACTION) -> set[str]:
    """Seeded choice of ~``fraction`` of the files (at least one when there are two or more)."""
    keys = sorted(set(keys), key=lambda k: _hkey(seed, source, k))
    if len(keys) < 2:
        return set()
    n = max(1, int(round(fraction * len(keys))))
    return set(keys[:n])


def _build_montages(src: _Source, out_dir: Path, split_of: dict[str, str], seed: int) -> None:
    """Assemble short noise events of ``src`` into ~MONTAGE_S clips, per split and licence."""
    groups: dict[tuple[str, str], list[tuple[_Item, float]]] = defaultdict(list)
    for item, dur in src.short:
        groups[(split_of.get(item.rel, "train"), item.licence)].append((item, dur))
    for (split, licence), members in sorted(groups.items()):
        members.sort(key=lambda m: _hkey(seed, src.name, "montage", m[0].rel))
        batches: list[list[_Item]] = [[]]
        acc = 0.0
        for item, dur in members:
            if acc >= MONTAGE_S:
                batches.append([])
                acc = 0.0
            batches[-1].append(item)
            acc += dur + sum(MONTAGE_GAP_S) / 2
        if len(batches) > 1 and acc < MIN_NOISE_S:
            batches[-2].extend(batches.pop())
        lic_tag = _slug(licence.replace("+", "plus")).lower() or "unknown"
        for k, batch in enumerate(batches):
            rel = f"noise/{_slug(src.name)}/montage/s{seed}-{split}-{lic_tag}-{k:03d}.flac"
            path = out_dir / rel
            if not path.is_file():
                rng = np.random.default_rng(int(_hkey(seed, src.name, rel)[:8], 16))
                pieces = []
                for item in batch:
                    pieces.append(_load_trimmed(item, "noise"))
                    pieces.append(np.zeros(int(rng.uniform(*MONTAGE_GAP_S) * SAMPLE_RATE), np.float32))
                y = np.concatenate(pieces[:-1]) if len(pieces) > 1 else pieces[0]
                if y.size < MIN_NOISE_S * SAMPLE_RATE:  # too little material in this group
                    continue
                _write_flac(out_dir, rel, y)
            fake = _Item(batch[0].path, rel, rel, licence)
            src.outputs.append(_row(rel, src, fake, _duration(path), split))


def _synthetic_source(out_dir: Path, seed: int, log: _Log) -> _Source:
    src = _Source(SYNTHETIC_SOURCE, "noise")
    src.licence_evidence.add("generated by gtcrn.training.prepare (CC0-1.0)")
    n_clips = SYNTH_CLIPS_PER_TYPE
    n_dev = SYNTH_DEV_CLIPS_PER_TYPE
    for kind in SYNTH_TYPES:
        for i in range(n_clips):
            rel = f"noise/{SYNTHETIC_SOURCE}/s{seed}/{kind}_{i:03d}.flac"
            path = out_dir / rel
            if not path.is_file():
                clip_seed = int(_hkey(seed, "synthetic", kind, i)[:12], 16)
                _write_flac(out_dir, rel, synth_noise(kind, SYNTH_CLIP_S, SAMPLE_RATE, clip_seed))
            split = "dev" if i >= n_clips - n_dev else "train"
            item = _Item(path, rel, rel, SYNTHETIC_LICENCE)
            src.outputs.append(_row(rel, src, item, _duration(path), split))
    log(f"synthetic: {len(src.outputs)} clips")
    return src


def _apply_screening(src: _Source, log: _Log) -> None:
    """Decide on a speech source from its files' screening: drop it or set its rows' weight."""
    if src.screening is None:
        src.screening = screen_decision(src.screens)
        src.screening["dropped_files"] = {
            k: v for k, v in sorted(src.skipped.items()) if k.startswith("screened:")
        }
        extra = f" ({'; '.join(src.screening['reasons'])})" if src.screening["reasons"] else ""
        log(f"{src.name}: screening -> {src.screening['decision']}{extra}")
    if src.screening["decision"] == "drop":
        src.excluded_reason = "screening: " + "; ".join(src.screening["reasons"])
        src.outputs.clear()
        src.clips.clear()
        return
    for r in src.outputs:
        r["weight"] = float(src.screening["weight"])


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _summary(src: _Source) -> dict:
    rows = src.outputs
    per_split = {}
    for split in ("train", "dev"):
        sel = [r for r in rows if r["split"] == split]
        entry = {"files": len(sel), "hours": round(sum(r["duration"] for r in sel) / 3600, 4)}
        if src.kind == "speech":
            entry["speakers"] = len({r["speaker"] for r in sel})
        per_split[split] = entry
    licences = sorted({r["licence"] for r in rows}) or sorted(
        {e.rsplit("-> ", 1)[-1] for e in src.licence_evidence if "-> " in e}
    )
    included = bool(rows) and src.excluded_reason is None
    if src.excluded_reason is not None:
        reason = src.excluded_reason
    elif not rows:
        reason = "no usable audio after filtering"
    elif src.screening and src.screening["decision"] == "down-weight":
        reason = "free licence, usable audio, down-weighted: " + "; ".join(src.screening["reasons"])
    else:
        reason = "free licence, usable audio"
    out = {
        "kind": src.kind,
        "licence": " | ".join(licences),
        "licence_evidence": sorted(src.licence_evidence),
        "included": included,
        "reason": reason,
        "files": len(rows),
        "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
        "weight": rows[0]["weight"] if rows else 0.0,
        "train": per_split["train"],
        "dev": per_split["dev"],
        "skipped": dict(sorted(src.skipped.items())),
    }
    if src.screening is not None:
        out["screening"] = src.screening
    return out


def prepare_pool(
    out_dir: str | Path,
    shared_dir: str | Path | None = None,
    debian_packages: bool = True,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    use_shared: bool = True,
) -> Path:
    """Build (or complete) the train/dev pool in ``out_dir``; return the manifest path.

    ``shared_dir`` is the shared folder (its ``data/`` subfolder is used when present; default
    :func:`default_shared_dir`, ``../shared`` from the working directory); ``use_shared=False``
    builds without it. ``debian_packages`` adds the packages of :data:`SPEECH_PACKAGES` and
    :data:`NOISE_PACKAGES` (about :data:`DEBIAN_DOWNLOAD_GB` GB on a first run, downloaded with
    ``apt-get download`` after their sizes are printed, cached in ``cache_dir``, default
    ``out_dir/.cache``); ``seed`` fixes every split and the synthetic noise.

    Raises :class:`PrepareError`, before any folder is created when the material is missing
    (no shared folder, or nothing to take speech from).
    """
    log = _Log(progress)
    out_dir = Path(out_dir)
    data_dir: Path | None = None
    readme = Path(os.devnull)
    if use_shared:
        shared = Path(shared_dir) if shared_dir is not None else default_shared_dir()
        if not shared.is_dir():
            how = "pass its location with --shared PATH" + (
                ", or --no-shared to build from the Debian packages alone" if debian_packages else "")
            where = " (../shared from the working directory)" if shared_dir is None else ""
            raise PrepareError(f"{shared}: no such folder{where}; the pool's speech, noise and room "
                               f"responses come from the shared material: {how}")
        data_dir = shared / "data" if (shared / "data").is_dir() else shared
        readme = shared / "README.md" if (shared / "README.md").is_file() else data_dir.parent / "README.md"
    if not debian_packages and (data_dir is None or not any(
            (data_dir / d).is_dir() for d in (LIBRISPEECH_DIR, GCOMPRIS_DIR))):
        raise PrepareError(f"no speech to build a pool from: {LIBRISPEECH_DIR} and {GCOMPRIS_DIR} are not "
                           f"in {data_dir if data_dir is not None else 'the shared folder (not used)'}, "
                           f"and the Debian packages are switched off")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out_dir / ".cache"
    cache.mkdir(parents=True, exist_ok=True)

    sources: list[_Source] = []
    if data_dir is not None:
        libri, libri_sexes = _librispeech_source(data_dir, readme, log)
        sources.append(libri)
        sources.append(_gcompris_source(data_dir, log))
        sources.extend(_shared_noise_sources(data_dir, readme))
        sources.extend(_rir_sources(data_dir))
    else:
        libri, libri_sexes = _Source(LIBRISPEECH_SOURCE, "speech", excluded_reason="no shared folder"), {}
        sources.append(libri)
    if debian_packages:
        rules = SPEECH_PACKAGES + NOISE_PACKAGES
        announce_downloads([PACKAGE_RULES[n].package or n for n in rules], cache)
        for name in rules:
            sources.append(_debian_source(name, cache, log))

    for src in sources:
        if src.excluded_reason is not None or not src.items:
            continue
        src.cut_split = (
            src.kind == "noise" and len(src.items) <= CUT_SPLIT_MAX_FILES and src.name not in FIXED_DEV_FILES
        )
        dc = _DecisionCache(cache / "decisions" / f"{_slug(src.name)}.json")
        _process_source(src, out_dir, dc, log)
        if src.kind == "speech":
            _apply_screening(src, log)
        if src.concat and src.excluded_reason is None:
            _process_concat_source(src, out_dir, seed, log)
            _apply_screening(src, log)  # sets the weight of the new rows

    # ---- splits -------------------------------------------------------------------------
    libri_dev = select_librispeech_dev(
        {s: x for s, x in libri_sexes.items() if any(i.speaker == s for i in libri.items)}, seed
    )
    decided: dict[str, str] = {}
    for src in sources:
        if src.kind != "speech" or not src.outputs:
            continue
        if src.name == LIBRISPEECH_SOURCE:
            for r in src.outputs:
                r["split"] = "dev" if r["speaker"] in libri_dev else "train"
            continue
        durs: dict[str, float] = defaultdict(float)
        for r in src.outputs:
            durs[r["speaker"]] += r["duration"]
        free = {s: d for s, d in durs.items() if s not in decided}
        dev = select_dev_speakers(free, seed) if len(free) > 1 else set()
        for s in free:
            decided[s] = "dev" if s in dev else "train"
        for r in src.outputs:
            r["split"] = decided[r["speaker"]]
    for src in sources:
        if src.kind not in ("noise", "rir") or src.name == SYNTHETIC_SOURCE:
            continue
        if not src.outputs and not src.short:
            continue
        if src.name in FIXED_DEV_FILES:
            dev_stems = set(FIXED_DEV_FILES[src.name])
            split_of = {}
            for item in src.items:
                split_of[item.rel] = "dev" if Path(item.rel).stem in dev_stems else "train"
            stem_split = {f"{item.out_stem}.flac": split_of[item.rel] for item in src.items}
            for r in src.outputs:
                r["split"] = stem_split[r["path"]]
        elif src.cut_split:
            split_of = {}
            for r in src.outputs:
                r["split"] = r["split"] or "train"
        else:
            rel_of_out = {}
            for item in src.items:
                rel_of_out[f"{item.out_stem}.flac"] = item.rel
            # whole files and short events (montage material) are held out separately
            long_keys = [rel_of_out[r["path"]] for r in src.outputs]
            short_keys = [i.rel for i, _ in src.short]
            dev = select_dev_files(long_keys, seed, src.name) | select_dev_files(short_keys, seed, src.name)
            split_of = {k: ("dev" if k in dev else "train") for k in long_keys + short_keys}
            for r in src.outputs:
                r["split"] = split_of[rel_of_out[r["path"]]]
        _build_montages(src, out_dir, split_of, seed)
    sources.append(_synthetic_source(out_dir, seed, log))

    rows = sorted((r for s in sources for r in s.outputs), key=lambda r: r["path"])
    dupes = sorted(p for p, n in Counter(r["path"] for r in rows).items() if n > 1)
    if dupes:
        raise PrepareError(f"internal error: output paths produced twice: {dupes[:5]}")
    if not any(r["kind"] == "speech" for r in rows):
        raise PrepareError(
            f"no speech found (looked in {data_dir or 'no shared folder'}"
            f"{' and Debian packages' if debian_packages else ''})"
        )
    manifest = out_dir / MANIFEST_NAME
    _write_if_changed(
        manifest,
        "".join(json.dumps({k: r[k] for k in MANIFEST_KEYS}, ensure_ascii=False) + "\n" for r in rows),
    )
    summary = {s.name: _summary(s) for s in sources}
    totals = {
        f"{kind}_{split}_hours": round(
            sum(r["duration"] for r in rows if r["kind"] == kind and r["split"] == split) / 3600, 4
        )
        for kind in KINDS
        for split in ("train", "dev")
    }
    totals.update(
        {
            f"{kind}_{split}_files": sum(r["kind"] == kind and r["split"] == split for r in rows)
            for kind in KINDS
            for split in ("train", "dev")
        }
    )
    _write_if_changed(
        out_dir / SOURCES_NAME,
        json.dumps({"seed": seed, "totals": totals, "sources": summary}, indent=2, ensure_ascii=False) + "\n",
    )
    log(f"manifest: {len(rows)} files, " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    return manifest
