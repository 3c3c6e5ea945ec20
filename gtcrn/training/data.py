"""Training data: on-the-fly mixing, paired folders and manifests, all at 16 kHz.

Three sources (see :class:`gtcrn.config.DataConfig`):

a. **On-the-fly mixing** of clean speech and noise, listed by a pool manifest (rows
   ``{"path", "kind": "speech"|"noise", "split"?, "speaker"?}``, as written by
   :mod:`gtcrn.training.prepare`) or found in plain folders (``speech_dirs``/``noise_dirs``). Each
   example is built by :meth:`MixingDataset.mix`:

   1. a random crop of ``segment_seconds`` from one utterance (zero padded when shorter);
   2. with probability ``eq_prob`` a random biquad (low/high shelf or peak, +-``eq_gain_db``)
      on the speech and an independent one on the noise. The target carries the same speech
      EQ, so the network learns to remove noise, not to equalise;
   3. with probability ``reverb_prob`` a room impulse response: a measured one (manifest rows of
      kind ``rir``, training split) for a ``real_rir_share`` of these examples, else one from a
      bank of simulated rooms (pyroomacoustics, the optional ``reverb`` extra; without it a
      synthetic bank of exponentially decaying noise tails with sparse early reflections). The mixture gets
      the full reverberant speech, the **target the direct path plus the early reflections**
      (the first ``early_ms`` = 50 ms after the direct path), as GTCRN's authors train. Both
      are shifted by the direct-path delay, so the target stays aligned with the mixture;
   4. noise: a random crop of a noise file (looped when shorter) or, with probability
      ``babble_prob``, babble made of 3-6 utterances of OTHER training speakers (other
      files where speakers are unknown), each at equal RMS. A noise file's crop plays faster or
      slower with probability ``noise_speed_prob`` (a factor from ``noise_speed``: its spectrum
      moves up or down with it), and with probability ``noise_mix_prob`` a crop of a second
      noise file is added at 0 to -10 dB: more kinds of noise than the files hold; with
      probability ``rumble_prob`` low-frequency rumble is added (:func:`rumble`);
   5. the noise is scaled to an SNR drawn uniformly from ``snr_db``, measured between the
      speech as it is in the mixture (reverberant, if reverberated) and the noise; with
      probability ``clean_prob`` no noise is added at all (clean input, clean target);
   5b. with probability ``bandlimit_prob`` the mixture and the target both pass through 8 kHz
      and back (soxr, as an 8 kHz recording does in ``gtcrn enhance``): telephone-band input,
      telephone-band target;
   6. the mixture is scaled to an RMS level drawn from ``level_dbfs``, target with the same
      gain; if the mixture or target peak would exceed ``max_peak`` (0.99) both are scaled
      down together, so nothing ever clips.

   The randomness of an example is a pure function of (seed, epoch, position in the epoch):
   epochs are reproducible whatever the number of loader workers, and a resumed run sees
   exactly the batches an uninterrupted one would.

b. **Paired folders**: ``paired_dir/noisy/**`` and ``paired_dir/clean/**`` with matching
   relative paths (the VCTK-DEMAND layout); random aligned crops.

c. **Manifests** (JSONL or CSV) of ``noisy``/``clean`` columns for corpora too large to scan.

Splits: a manifest's ``split`` column wins. Otherwise speakers are held out by a stable hash
(``dev_fraction`` of them, at least one): the speaker is the ``speaker`` column, else the
file's parent folder name, or for flat folders the file name up to the first ``_``
(``p226_001.wav`` -> ``p226``). Noise files without a split are held out file by file.

The validation set is fixed: ``dev_count`` mixtures generated once from the dev speakers and
dev noise with a seed of their own (identical on every call and every epoch), or the dev pairs
(cropped to at most ``dev_seconds``).

Decoded, resampled audio is cached (``cache``): ``memory`` keeps float16 arrays in RAM
(relative precision 2^-11, far below any training SNR), ``disk`` writes float16 ``.npy`` files
under ``cache_dir`` keyed by path, size and mtime and memory-maps them (shared by every
process and every run), ``none`` decodes on access.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import signal as sps

from ..audio import AudioError, read_audio, resample
from ..config import ConfigError, DataConfig
from ..extras import install_hint
from ..stft import SAMPLE_RATE

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")
CACHE_VERSION = "1"
_EPS = 1e-12
# Domains that keep the per-purpose random streams apart (numpy SeedSequence entropy words).
_TRAIN_STREAM = 0x7A11
_DEV_STREAM = 0xDE7
_RIR_STREAM = 0x515


class DataError(ConfigError):
    """The data described by a config cannot be used; the message says why."""


# ---- files, manifests and splits ------------------------------------------------------------

@dataclass
class Entry:
    """One audio file of a pool (speech or noise)."""

    path: Path
    kind: str  # "speech" | "noise" | "rir" (a measured room impulse response)
    split: str  # "train" | "dev"
    speaker: str | None = None
    weight: float = 1.0  # relative chance of being drawn (manifest ``weight``; speech only)


@dataclass
class PairEntry:
    """One (noisy, clean) pair."""

    noisy: Path
    clean: Path
    split: str
    speaker: str | None = None


def list_audio(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursive, sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def speaker_of(path: Path, root: Path | None = None) -> str:
    """Parent folder name, or for a file directly in ``root`` its name up to the first '_'."""
    if root is not None and path.parent == root:
        return path.stem.split("_")[0]
    return path.parent.name


def _stable_fraction(key: str) -> float:
    """A hash of ``key`` as a number in [0, 1) that is the same on every machine and run."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def held_out(keys: Sequence[str], fraction: float) -> set[str]:
    """The ``fraction`` (at least one when there are two or more) of distinct ``keys`` with the
    lowest stable hash: a deterministic split that does not depend on order or on other keys."""
    distinct = sorted(set(keys), key=lambda k: (_stable_fraction(k), k))
    if len(distinct) < 2 or fraction <= 0:
        return set()
    count = min(len(distinct) - 1, max(1, round(fraction * len(distinct))))
    return set(distinct[:count])


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL or CSV manifest; path-like columns are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest (build the pool with `python -m gtcrn.training.prepare` "
                        f"or point data.manifest at an existing file)")
    rows: list[dict[str, Any]] = []
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc.msg})") from None
    base = path.parent
    for row in rows:
        for key in ("path", "noisy", "clean"):
            if row.get(key):
                p = Path(row[key])
                row[key] = p if p.is_absolute() else base / p
        for key in ("split", "speaker", "kind"):
            if row.get(key) in ("", None):
                row[key] = None
    return rows


def _split_pool(entries: list[Entry], unsplit: list[int], fraction: float) -> None:
    """Give a split to entries that have none: speech by speaker, noise by file."""
    speech = [i for i in unsplit if entries[i].kind == "speech"]
    noise = [i for i in unsplit if entries[i].kind in ("noise", "rir")]
    dev_spk = held_out([entries[i].speaker or str(entries[i].path) for i in speech], fraction)
    for i in speech:
        entries[i].split = "dev" if (entries[i].speaker or str(entries[i].path)) in dev_spk else "train"
    dev_noise = held_out([str(entries[i].path) for i in noise], fraction)
    for i in noise:
        entries[i].split = "dev" if str(entries[i].path) in dev_noise else "train"


def _row_weight(manifest: str | Path, row: dict[str, Any]) -> float:
    """A manifest row's ``weight`` (1.0 when absent): a finite number >= 0."""
    value = row.get("weight")
    if value in (None, ""):
        return 1.0
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight) or weight < 0:
        raise DataError(f"{manifest}: row for {row['path']} has weight {value!r} (expected a number >= 0)")
    return weight


def pool_entries(cfg: DataConfig) -> list[Entry]:
    """Speech and noise files for mixing from ``cfg.manifest`` rows and the plain folders.

    Rows of weight 0 are left out; other weights are kept on the entries (see :class:`EpochBatches`)."""
    entries: list[Entry] = []
    unsplit: list[int] = []
    if cfg.manifest:
        for row in read_manifest(cfg.manifest):
            if "path" not in row:
                continue
            kind = row.get("kind")
            if kind not in ("speech", "noise", "rir"):
                raise DataError(f"{cfg.manifest}: row for {row['path']} has kind {kind!r} "
                                f"(expected speech, noise or rir)")
            split = row.get("split")
            if split not in (None, "train", "dev"):
                raise DataError(f"{cfg.manifest}: row for {row['path']} has split {split!r}")
            speaker = row.get("speaker")
            if kind == "speech" and speaker is None:
                speaker = row["path"].parent.name
            weight = _row_weight(cfg.manifest, row)
            if weight == 0:
                continue
            if split is None:
                unsplit.append(len(entries))
            entries.append(Entry(row["path"], kind, split or "", None if speaker is None else str(speaker),
                                 weight))
    for kind, dirs in (("speech", cfg.speech_dirs), ("noise", cfg.noise_dirs)):
        for d in dirs:
            root = Path(d)
            for p in list_audio(root):
                unsplit.append(len(entries))
                entries.append(Entry(p, kind, "", speaker_of(p, root) if kind == "speech" else None))
    _split_pool(entries, unsplit, cfg.dev_fraction)
    return entries


def pair_entries(cfg: DataConfig) -> list[PairEntry]:
    """(noisy, clean) pairs from ``paired_dir``, ``dev_paired_dir`` and ``{noisy, clean}`` manifest rows."""
    pairs: list[PairEntry] = []
    unsplit: list[int] = []

    def folder(root: Path, split: str | None) -> None:
        noisy_root, clean_root = root / "noisy", root / "clean"
        if not noisy_root.is_dir() or not clean_root.is_dir():
            raise DataError(f"{root}: a paired folder needs noisy/ and clean/ subfolders")
        noisy = {p.relative_to(noisy_root): p for p in list_audio(noisy_root)}
        clean = {p.relative_to(clean_root): p for p in list_audio(clean_root)}
        missing = sorted(set(noisy) ^ set(clean))
        if missing:
            raise DataError(f"{root}: {len(missing)} file(s) have no partner in the other folder, "
                            f"e.g. {missing[0]}")
        for rel in sorted(noisy):
            if split is None:
                unsplit.append(len(pairs))
            pairs.append(PairEntry(noisy[rel], clean[rel], split or "", speaker_of(clean[rel], clean_root)))

    if cfg.paired_dir:
        folder(Path(cfg.paired_dir), "train" if cfg.dev_paired_dir else None)
    if cfg.dev_paired_dir:
        folder(Path(cfg.dev_paired_dir), "dev")
    if cfg.manifest:
        for row in read_manifest(cfg.manifest):
            if "noisy" not in row and "clean" not in row:
                continue
            if not row.get("noisy") or not row.get("clean"):
                raise DataError(f"{cfg.manifest}: a paired row needs both noisy and clean: {row}")
            split = row.get("split")
            if split is None:
                unsplit.append(len(pairs))
            speaker = row.get("speaker") or row["clean"].parent.name
            pairs.append(PairEntry(row["noisy"], row["clean"], split or "", str(speaker)))
    dev_spk = held_out([pairs[i].speaker or str(pairs[i].clean) for i in unsplit], cfg.dev_fraction)
    for i in unsplit:
        pairs[i].split = "dev" if (pairs[i].speaker or str(pairs[i].clean)) in dev_spk else "train"
    return pairs


# ---- decoding and caching -------------------------------------------------------------------

def load_mono_16k(path: str | Path) -> np.ndarray:
    """Decode a file as float32 mono (channel mean) at 16 kHz."""
    audio, sr, _ = read_audio(path)  # (channels, samples)
    mono = audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]  # (samples,)
    return np.ascontiguousarray(resample(mono, sr, SAMPLE_RATE), dtype=np.float32)


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SAMPLE_RATE}|{CACHE_VERSION}"
    return hashlib.sha1(ident.encode("utf-8")).hexdigest()


class AudioBank:
    """A list of audio files decoded once to 16 kHz mono and cached (see module docstring).

    ``bank[i]`` is a 1-D array (float16 in memory/disk mode, float32 with ``cache="none"``);
    convert the slice you need with ``.astype(np.float32)``.
    """

    def __init__(self, paths: Sequence[Path], cache: str = "memory", cache_dir: str | Path | None = None,
                 progress: bool = False, desc: str = "decoding audio") -> None:
        self.paths = [Path(p) for p in paths]
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._arrays: list[np.ndarray] = []
        if cache == "disk" and self.cache_dir is None:
            raise DataError("data.cache = disk needs data.cache_dir")
        if cache in ("memory", "disk"):
            loader = self._load_memory if cache == "memory" else self._load_disk
            workers = max(1, min(8, os.cpu_count() or 1))
            with ThreadPoolExecutor(workers) as pool:
                results = pool.map(loader, self.paths)
                if progress and len(self.paths) > 20:
                    from tqdm import tqdm

                    results = tqdm(results, total=len(self.paths), desc=desc, file=sys.stderr)
                self._arrays = list(results)
            self.lengths = [int(a.shape[0]) for a in self._arrays]
        else:
            self.lengths = [self._probe_length(p) for p in self.paths]

    @staticmethod
    def _probe_length(path: Path) -> int:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{path}: not a readable audio file ({exc})") from None
        return int(math.ceil(info.frames * SAMPLE_RATE / info.samplerate))

    @staticmethod
    def _load_memory(path: Path) -> np.ndarray:
        return load_mono_16k(path).astype(np.float16)

    def _load_disk(self, path: Path) -> np.ndarray:
        assert self.cache_dir is not None
        key = _cache_key(path)
        target = self.cache_dir / key[:2] / f"{key}.npy"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            data = load_mono_16k(path).astype(np.float16)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=str(target.parent))
            os.close(fd)
            try:
                np.save(tmp, data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return np.load(target, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.cache == "none":
            return load_mono_16k(self.paths[i])
        return self._arrays[i]


# ---- signal helpers -------------------------------------------------------------------------

def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + _EPS))


def crop(audio: np.ndarray, length: int, rng: np.random.Generator, loop: bool = False) -> np.ndarray:
    """A random ``length``-sample float32 excerpt; shorter audio is zero padded at a random
    offset, or looped from a random start when ``loop``."""
    n = int(audio.shape[0])
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return np.asarray(audio[start:start + length], dtype=np.float32)
    if n == 0:
        return np.zeros(length, dtype=np.float32)
    if loop:
        reps = -(-(length + n) // n)
        tiled = np.tile(np.asarray(audio, dtype=np.float32), reps)  # (reps * n,)
        start = int(rng.integers(0, n))
        return tiled[start:start + length].copy()
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - n + 1))
    out[start:start + n] = audio
    return out


def random_biquad(rng: np.random.Generator, gain_db: float, sample_rate: int = SAMPLE_RATE
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A random low-shelf, high-shelf or peaking biquad (RBJ cookbook), gain in +-``gain_db``.

    Returns (b, a) with a[0] = 1. Centre/corner frequencies are log-uniform in 100-6000 Hz.
    """
    kind = ("lowshelf", "highshelf", "peak")[int(rng.integers(0, 3))]
    f0 = float(np.exp(rng.uniform(np.log(100.0), np.log(6000.0))))
    gain = float(rng.uniform(-gain_db, gain_db))
    q = float(rng.uniform(0.5, 2.0))
    a_lin = 10.0 ** (gain / 40.0)
    w0 = 2.0 * np.pi * f0 / sample_rate
    cw, sw = np.cos(w0), np.sin(w0)
    alpha = sw / (2.0 * q)
    if kind == "peak":
        b = [1 + alpha * a_lin, -2 * cw, 1 - alpha * a_lin]
        a = [1 + alpha / a_lin, -2 * cw, 1 - alpha / a_lin]
    else:
        sq = 2.0 * np.sqrt(a_lin) * alpha
        if kind == "lowshelf":
            b = [a_lin * ((a_lin + 1) - (a_lin - 1) * cw + sq), 2 * a_lin * ((a_lin - 1) - (a_lin + 1) * cw),
                 a_lin * ((a_lin + 1) - (a_lin - 1) * cw - sq)]
            a = [(a_lin + 1) + (a_lin - 1) * cw + sq, -2 * ((a_lin - 1) + (a_lin + 1) * cw),
                 (a_lin + 1) + (a_lin - 1) * cw - sq]
        else:
            b = [a_lin * ((a_lin + 1) + (a_lin - 1) * cw + sq), -2 * a_lin * ((a_lin - 1) + (a_lin + 1) * cw),
                 a_lin * ((a_lin + 1) + (a_lin - 1) * cw - sq)]
            a = [(a_lin + 1) - (a_lin - 1) * cw + sq, 2 * ((a_lin - 1) - (a_lin + 1) * cw),
                 (a_lin + 1) - (a_lin - 1) * cw - sq]
    b_arr, a_arr = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return b_arr / a_arr[0], a_arr / a_arr[0]


def rumble(rng: np.random.Generator, length: int, corner_hz: tuple[float, float],
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Low-frequency rumble of unit power (float32, (length,)): Gaussian noise through a 4th-order
    Butterworth low-pass at a corner drawn log-uniformly from ``corner_hz``, its amplitude swaying
    slowly (a 0.1-2 Hz sine of depth 0-0.8), as a passing vehicle, a train or wind on a microphone."""
    corner = float(np.exp(rng.uniform(*np.log(corner_hz))))
    sos = sps.butter(4, corner, fs=sample_rate, output="sos")
    x = sps.sosfilt(sos, rng.standard_normal(length + sample_rate // 2))[sample_rate // 2:]  # settled
    t = np.arange(length) / sample_rate
    depth, rate, phase = rng.uniform(0.0, 0.8), rng.uniform(0.1, 2.0), rng.uniform(0, 2 * np.pi)
    x = x * (1.0 + depth * np.sin(2 * np.pi * rate * t + phase))
    return (x / max(rms(x), 1e-12)).astype(np.float32)


# ---- room impulse responses -----------------------------------------------------------------

@dataclass
class RIR:
    """An impulse response and the index of its direct path."""

    taps: np.ndarray  # float32 (n,)
    direct: int


def measured_rir(taps: np.ndarray) -> RIR:
    """A measured impulse response (1-D) as an :class:`RIR`: the direct path is its largest tap,
    and the taps are scaled so that the direct path is 1 (the level is set by the mixing)."""
    taps = np.asarray(taps, dtype=np.float32)
    if taps.ndim != 1 or taps.size == 0 or not np.any(taps):
        raise DataError("a room impulse response must be a non-silent 1-D signal")
    direct = int(np.argmax(np.abs(taps)))
    return RIR((taps / taps[direct]).astype(np.float32), direct)


def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE) -> RIR:
    """A simple synthetic room: direct path after 2-15 ms, 4-12 sparse early reflections in
    the first 50 ms and a Gaussian tail decaying by 60 dB over ``rt60`` seconds, at a random
    direct-to-reverberant ratio (-3..12 dB)."""
    direct = int(rng.integers(int(0.002 * sample_rate), int(0.015 * sample_rate)))
    n = direct + int(rt60 * sample_rate) + 1
    taps = np.zeros(n, dtype=np.float64)
    taps[direct] = 1.0
    tail_len = n - direct
    t = np.arange(tail_len) / sample_rate  # seconds after the direct path
    decay = np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    tail = rng.standard_normal(tail_len) * decay
    onset = min(tail_len, int(0.005 * sample_rate))
    tail[:onset] *= np.linspace(0.0, 1.0, onset, endpoint=False)  # diffuse tail builds up over 5 ms
    drr_db = rng.uniform(-3.0, 12.0)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / (np.sum(tail**2) + _EPS))
    taps[direct:] += tail
    k = int(rng.integers(4, 13))
    delays = rng.integers(int(0.001 * sample_rate), int(0.05 * sample_rate), k)
    amps = rng.uniform(-0.6, 0.6, k) * np.exp(-6.9078 * delays / sample_rate / rt60)
    np.add.at(taps, direct + delays, amps)
    return RIR(taps.astype(np.float32), direct)


def pyroomacoustics_rir(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE) -> RIR:
    """A shoebox room (image source method) of random size with absorption set by Sabine's
    formula for ``rt60``; source and microphone at random positions at least 0.5 m apart."""
    import pyroomacoustics as pra

    for _ in range(20):
        dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 4.0)])
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # the room is too large for so short a reverberation time
            continue
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption),
                           max_order=int(min(max_order, 20)))
        src = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        if np.linalg.norm(src - mic) < 0.5:
            continue
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        taps = np.asarray(room.rir[0][0], dtype=np.float32)
        return RIR(taps, int(np.argmax(np.abs(taps))))
    return synthetic_rir(rng, rt60, sample_rate)


def rir_backend(name: str) -> str:
    """Resolve ``auto`` to ``pyroomacoustics`` when it is installed, else ``synthetic``."""
    if name == "synthetic":
        return name
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError:
        if name == "pyroomacoustics":
            raise DataError("data.rir_backend = pyroomacoustics, but it is not installed: "
                            f"{install_hint('reverb')} (or use rir_backend: synthetic)") from None
        return "synthetic"
    return "pyroomacoustics"


def rir_bank(count: int, rt60: tuple[float, float], seed: int, backend: str = "auto",
             cache_dir: str | Path | None = None) -> list[RIR]:
    """``count`` seeded impulse responses with RT60 uniform in ``rt60`` (cached on disk for
    pyroomacoustics, whose rooms take a while to simulate)."""
    backend = rir_backend(backend)
    make = pyroomacoustics_rir if backend == "pyroomacoustics" else synthetic_rir
    cache_file = None
    if cache_dir is not None and backend == "pyroomacoustics":
        key = hashlib.sha1(f"{backend}|{count}|{rt60}|{seed}|{CACHE_VERSION}".encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"rirs-{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as z:
                offsets, taps, direct = z["offsets"], z["taps"], z["direct"]
            return [RIR(taps[offsets[i]:offsets[i + 1]].copy(), int(direct[i])) for i in range(count)]
    bank = []
    for i in range(count):
        rng = np.random.default_rng([seed, _RIR_STREAM, i])
        bank.append(make(rng, float(rng.uniform(*rt60))))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [r.taps.size for r in bank])
        fd, tmp = tempfile.mkstemp(prefix=".rirs.", suffix=".npz", dir=str(cache_file.parent))
        os.close(fd)
        np.savez(tmp, offsets=offsets, taps=np.concatenate([r.taps for r in bank]),
                 direct=np.array([r.direct for r in bank]))
        os.replace(tmp, cache_file)
    return bank


def reverberate(speech: np.ndarray, rir: RIR, early_ms: float, sample_rate: int = SAMPLE_RATE
                ) -> tuple[np.ndarray, np.ndarray]:
    """(reverberant speech, early target): ``speech`` convolved with the full response and with
    its first ``early_ms`` after the direct path, both advanced by the direct-path delay so the
    direct sound stays where it was (same length as ``speech``)."""
    n = speech.shape[0]
    end_early = min(rir.taps.size, rir.direct + int(round(early_ms * sample_rate / 1000.0)) + 1)
    full = sps.fftconvolve(speech, rir.taps)[rir.direct:rir.direct + n]  # (n,)
    early = sps.fftconvolve(speech, rir.taps[:end_early])[rir.direct:rir.direct + n]  # (n,)
    return full.astype(np.float32), early.astype(np.float32)


def telephone_band(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` (1-D) through 8 kHz and back: what is left of a signal recorded or sent at 8 kHz
    once `gtcrn enhance` has brought it to 16 kHz (nothing above 4 kHz); same length."""
    narrow = resample(np.asarray(x, np.float32), sample_rate, 8000)  # (N/2,)
    wide = resample(narrow, 8000, sample_rate).astype(np.float64)  # (~N,)
    n = x.shape[0]
    return wide[:n] if wide.shape[0] >= n else np.pad(wide, (0, n - wide.shape[0]))


# ---- mixing ---------------------------------------------------------------------------------

@dataclass
class Mixture:
    """One mixed example and how it was made (the components are as they are in ``noisy``)."""

    noisy: np.ndarray
    target: np.ndarray
    speech: np.ndarray  # the speech component of ``noisy`` (reverberant when reverberated)
    noise: np.ndarray  # the noise component of ``noisy``
    snr_db: float
    level_dbfs: float
    gain: float
    speaker: str | None
    noise_kind: str  # "noise" | "babble" | "none" (clean input)
    babble_speakers: list[str | None] = field(default_factory=list)
    reverb: bool = False
    eq: bool = False
    real_rir: bool = False
    bandlimited: bool = False


class MixingDataset(torch.utils.data.Dataset):
    """On-the-fly mixtures of one split's speech and noise (see the module docstring).

    ``len(ds)`` is the number of utterances; ``ds[key]`` with ``key = (epoch, position, index)``
    returns ``(noisy, target)`` float32 tensors of ``segment`` samples, its randomness drawn
    from (seed, epoch, position); an int key uses (seed, index).
    """

    def __init__(self, speech: AudioBank, speakers: Sequence[str | None], noise: AudioBank,
                 cfg: DataConfig, seed: int, segment: int, rirs: Sequence[RIR] = (),
                 real_rirs: Sequence[RIR] = ()) -> None:
        if len(speech) == 0:
            raise DataError("no speech files for mixing")
        if len(noise) == 0:
            raise DataError("no noise files for mixing")
        self.speech = speech
        self.speakers = list(speakers)
        self.noise = noise
        self.cfg = cfg
        self.seed = int(seed)
        self.segment = int(segment)
        self.rirs = list(rirs)
        self.real_rirs = list(real_rirs)
        # Per utterance: the utterances of other speakers (other files where speakers are unknown).
        by_speaker: dict[str, list[int]] = {}
        for i, s in enumerate(self.speakers):
            if s is not None:
                by_speaker.setdefault(s, []).append(i)
        self._all = np.arange(len(self.speakers))
        self._same: dict[str, np.ndarray] = {s: np.array(v) for s, v in by_speaker.items()}

    def __len__(self) -> int:
        return len(self.speech)

    def others(self, index: int) -> np.ndarray:
        """Indices of utterances usable as babble for utterance ``index``."""
        spk = self.speakers[index]
        excluded = self._same[spk] if spk is not None else np.array([index])
        return np.setdiff1d(self._all, excluded, assume_unique=True)

    def _speech_crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A crop with some signal in it (a few tries, for files with long silences)."""
        x = crop(self.speech[index], self.segment, rng)
        for _ in range(4):
            if rms(x) > 1e-4:
                break
            x = crop(self.speech[index], self.segment, rng)
        return x

    def _babble(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str | None]] | None:
        pool = self.others(index)
        if pool.size == 0:
            return None
        lo, hi = self.cfg.babble_speakers
        k = min(int(rng.integers(lo, hi + 1)), pool.size)
        chosen = rng.choice(pool, size=k, replace=False)
        out = np.zeros(self.segment, dtype=np.float64)
        for j in chosen:
            talker = crop(self.speech[int(j)], self.segment, rng, loop=True)
            out += talker / rms(talker)
        return out.astype(np.float32), [self.speakers[int(j)] for j in chosen]

    def _noise_crop(self, rng: np.random.Generator) -> np.ndarray:
        """A crop of a random noise file (not digitally silent where possible), sped up or slowed
        down with probability ``noise_speed_prob``."""
        cfg = self.cfg
        for _ in range(5):  # avoid digital silence in a noise file
            audio = self.noise[int(rng.integers(0, len(self.noise)))]
            if cfg.noise_speed_prob > 0 and rng.random() < cfg.noise_speed_prob:
                lo, hi = np.log(cfg.noise_speed)
                speed = float(np.exp(rng.uniform(lo, hi)))
                # Read as if sampled at speed x 16 kHz: `speed` times faster, frequencies x speed.
                longer = crop(audio, int(math.ceil(self.segment * speed)) + 64, rng, loop=True)
                noise = resample(longer, SAMPLE_RATE * speed, SAMPLE_RATE)[:self.segment]
                noise = np.pad(noise, (0, self.segment - noise.shape[0])).astype(np.float32)
            else:
                noise = crop(audio, self.segment, rng, loop=True)
            if rms(noise) > 1e-6:
                break
        return noise

    def mix(self, index: int, rng: np.random.Generator) -> Mixture:
        """Build the example for utterance ``index`` with randomness from ``rng``."""
        cfg = self.cfg
        dry = self._speech_crop(index, rng)  # (L,)
        eq = bool(rng.random() < cfg.eq_prob)
        if eq:
            b, a = random_biquad(rng, cfg.eq_gain_db)
            dry = sps.lfilter(b, a, dry).astype(np.float32)
        reverb = bool(self.rirs or self.real_rirs) and bool(rng.random() < cfg.reverb_prob)
        real_rir = False
        if reverb:
            real_rir = bool(self.real_rirs) and (not self.rirs or bool(rng.random() < cfg.real_rir_share))
            bank = self.real_rirs if real_rir else self.rirs
            rir = bank[int(rng.integers(0, len(bank)))]
            speech, target = reverberate(dry, rir, cfg.early_ms)
        else:
            speech, target = dry, dry.copy()
        noise_kind, babble_spk = "noise", []
        babble = self._babble(index, rng) if rng.random() < cfg.babble_prob else None
        if babble is not None:
            noise, babble_spk = babble
            noise_kind = "babble"
        else:
            noise = self._noise_crop(rng)
            # Drawn only when enabled, so that configs without them keep their random streams.
            if cfg.noise_mix_prob > 0 and rng.random() < cfg.noise_mix_prob:
                second = self._noise_crop(rng)
                gain = rms(noise) / max(rms(second), 1e-9) * 10 ** (-rng.uniform(0, 10) / 20)
                noise = (noise + gain * second).astype(np.float32)
        if cfg.rumble_prob > 0 and rng.random() < cfg.rumble_prob:  # drawn only when enabled, as above
            level = rms(noise) * 10 ** (rng.uniform(*cfg.rumble_db) / 20)
            noise = (noise + level * rumble(rng, noise.shape[0], cfg.rumble_hz)).astype(np.float32)
        if eq:
            b, a = random_biquad(rng, cfg.eq_gain_db)
            noise = sps.lfilter(b, a, noise).astype(np.float32)
        snr = float(rng.uniform(*cfg.snr_db))
        level = float(rng.uniform(*cfg.level_dbfs))
        # Drawn only when enabled, so that configs without them keep their random streams.
        clean_input = cfg.clean_prob > 0 and bool(rng.random() < cfg.clean_prob)
        bandlimited = cfg.bandlimit_prob > 0 and bool(rng.random() < cfg.bandlimit_prob)
        speech64, target64, noise64 = (np.asarray(v, np.float64) for v in (speech, target, noise))
        p_speech = float(np.mean(speech64**2))
        p_noise = float(np.mean(noise64**2))
        if clean_input:
            noise64[:] = 0.0
            snr, noise_kind, babble_spk = math.inf, "none", []
        elif p_speech > 0 and p_noise > 0:
            noise64 *= np.sqrt(p_speech / (p_noise * 10.0 ** (snr / 10.0)))
        if bandlimited:
            speech64, target64, noise64 = (telephone_band(v) for v in (speech64, target64, noise64))
        noisy64 = speech64 + noise64
        gain = 10.0 ** (level / 20.0) / rms(noisy64)
        peak = gain * max(float(np.max(np.abs(noisy64))), float(np.max(np.abs(target64))))
        if peak > cfg.max_peak:
            gain *= cfg.max_peak / peak
        as32 = [(v * gain).astype(np.float32) for v in (noisy64, target64, speech64, noise64)]
        return Mixture(as32[0], as32[1], as32[2], as32[3], snr, level, gain, self.speakers[index],
                       noise_kind, babble_spk, reverb, eq, real_rir, bandlimited)

    def rng_for(self, key: int | tuple[int, int, int]) -> tuple[int, np.random.Generator]:
        """(utterance index, generator) for a dataset key."""
        if isinstance(key, (tuple, list)):
            epoch, position, index = (int(k) for k in key)
            return index, np.random.default_rng([self.seed, _TRAIN_STREAM, epoch, position])
        return int(key), np.random.default_rng([self.seed, _TRAIN_STREAM, 2**31, int(key)])

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = self.rng_for(key)
        m = self.mix(index, rng)
        return torch.from_numpy(m.noisy), torch.from_numpy(m.target)


class PairedDataset(torch.utils.data.Dataset):
    """Random aligned crops of (noisy, clean) pairs; keys as for :class:`MixingDataset`."""

    def __init__(self, noisy: AudioBank, clean: AudioBank, seed: int, segment: int) -> None:
        if len(noisy) == 0:
            raise DataError("no training pairs")
        self.noisy, self.clean = noisy, clean
        self.seed, self.segment = int(seed), int(segment)

    def __len__(self) -> int:
        return len(self.noisy)

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            epoch, position, index = (int(k) for k in key)
            rng = np.random.default_rng([self.seed, _TRAIN_STREAM, epoch, position])
        else:
            index = int(key)
            rng = np.random.default_rng([self.seed, _TRAIN_STREAM, 2**31, index])
        noisy, clean = self.noisy[index], self.clean[index]
        n = min(noisy.shape[0], clean.shape[0])
        length = self.segment
        out_n = np.zeros(length, dtype=np.float32)
        out_c = np.zeros(length, dtype=np.float32)
        if n >= length:
            start = int(rng.integers(0, n - length + 1))
            out_n[:] = noisy[start:start + length]
            out_c[:] = clean[start:start + length]
        else:
            start = int(rng.integers(0, length - n + 1))
            out_n[start:start + n] = noisy[:n]
            out_c[start:start + n] = clean[:n]
        return torch.from_numpy(out_n), torch.from_numpy(out_c)


# ---- sampling -------------------------------------------------------------------------------

class EpochBatches:
    """Deterministic, resumable, rank-sharded batches of dataset keys.

    Epoch ``e`` visits ``examples_per_epoch`` positions (default: ``num_items``) over seeded
    permutations of the items; global batch ``j`` is positions ``[j*B*W, (j+1)*B*W)``, of which
    rank ``r`` takes the ``r``-th run of ``B``. Keys are ``(epoch, position, item)``.

    With ``weights`` (one per item, not all equal) the positions are instead seeded draws with
    replacement, item ``i`` drawn with probability ``weights[i] / sum(weights)``.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, examples_per_epoch: int = 0,
                 rank: int = 0, world_size: int = 1, weights: Sequence[float] | None = None) -> None:
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.per_epoch = int(examples_per_epoch) or self.num_items
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch = self.batch_size * self.world_size
        self.steps_per_epoch = self.per_epoch // self.global_batch
        self.p: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)  # (num_items,)
            if w.shape != (self.num_items,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise DataError(f"sampling weights must be {self.num_items} finite numbers >= 0, "
                                f"not all zero")
            if np.any(w != w[0]):
                self.p = w / w.sum()
        if self.steps_per_epoch == 0:
            raise DataError(f"an epoch of {self.per_epoch} examples is shorter than one global batch "
                            f"({self.batch_size} x {self.world_size} processes); lower train.batch_size "
                            f"or raise train.examples_per_epoch")

    def order(self, epoch: int) -> np.ndarray:
        """The item visited at each position of ``epoch``."""
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, 0x0DE5, int(epoch)])
        if self.p is not None:
            return rng.choice(self.num_items, size=self.per_epoch, replace=True, p=self.p)
        reps = -(-self.per_epoch // self.num_items)
        return np.concatenate([rng.permutation(self.num_items) for _ in range(reps)])[:self.per_epoch]

    def batches(self, epoch: int, start: int = 0) -> list[list[tuple[int, int, int]]]:
        """This rank's batches of ``epoch`` from batch ``start`` on."""
        items = self.order(epoch)
        out = []
        for j in range(start, self.steps_per_epoch):
            first = j * self.global_batch + self.rank * self.batch_size
            out.append([(int(epoch), p, int(items[p])) for p in range(first, first + self.batch_size)])
        return out


# ---- assembling the data of a run ---------------------------------------------------------

@dataclass
class RunData:
    """What a training run needs: the training dataset and the fixed dev pairs."""

    train: torch.utils.data.Dataset
    dev: list[tuple[np.ndarray, np.ndarray]]
    kind: str  # "mixing" | "paired"
    summary: dict[str, Any]
    weights: np.ndarray | None = None  # per training item, relative chance of being drawn (None: equal)


def make_dev_mixtures(speech: AudioBank, speakers: Sequence[str | None], noise: AudioBank,
                      cfg: DataConfig, seed: int, rirs: Sequence[RIR] = (), real_rirs: Sequence[RIR] = ()
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cfg.dev_count`` fixed (noisy, target) mixtures of ``dev_seconds`` from dev speech/noise,
    seeded by (seed, item) only: the same on every call."""
    segment = int(round(cfg.dev_seconds * SAMPLE_RATE))
    ds = MixingDataset(speech, speakers, noise, cfg, seed, segment, rirs, real_rirs)
    out = []
    for i in range(cfg.dev_count):
        rng = np.random.default_rng([seed, _DEV_STREAM, i])
        m = ds.mix(i % len(speech), rng)
        out.append((m.noisy, m.target))
    return out


def _dev_pairs(noisy: AudioBank, clean: AudioBank, cfg: DataConfig, seed: int
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``dev_count`` pairs spread over the dev list, cropped to ``dev_seconds`` (seeded)."""
    n = len(noisy)
    picks = np.unique(np.linspace(0, n - 1, min(n, cfg.dev_count)).round().astype(int)) if n else []
    limit = int(round(cfg.dev_seconds * SAMPLE_RATE))
    out = []
    for i in picks:
        x, y = np.asarray(noisy[int(i)], np.float32), np.asarray(clean[int(i)], np.float32)
        m = min(x.shape[0], y.shape[0])
        start = 0
        if m > limit:
            start = int(np.random.default_rng([seed, _DEV_STREAM, int(i)]).integers(0, m - limit + 1))
            m = limit
        out.append((x[start:start + m].copy(), y[start:start + m].copy()))
    return out


def check_data_paths(cfg: DataConfig) -> None:
    """Every file and folder a data config names exists; else :class:`DataError` naming the config
    key and the path (``data.speech_dirs[1]: corpus/x: no such folder``). Cheap: run before
    anything is created."""
    folders = [(f"data.{key}[{i}]", entry) for key in ("speech_dirs", "noise_dirs")
               for i, entry in enumerate(getattr(cfg, key))]
    folders += [(f"data.{key}", getattr(cfg, key)) for key in ("paired_dir", "dev_paired_dir")
                if getattr(cfg, key)]
    for where, entry in folders:
        if not Path(entry).is_dir():
            what = "not a folder" if Path(entry).exists() else "no such folder"
            raise DataError(f"{where}: {entry}: {what}")
    if cfg.manifest and not Path(cfg.manifest).is_file():
        raise DataError(f"data.manifest: {cfg.manifest}: no such file (build a pool with `gtcrn prepare`, or "
                        f"train on folders with data.speech_dirs and data.noise_dirs: configs/own-data.yaml)")


def build_run_data(cfg: DataConfig, seed: int, progress: bool = False, log=print) -> RunData:
    """Decode (or load from cache) everything ``cfg`` names and build the training dataset and
    the fixed dev set."""
    segment = int(round(cfg.segment_seconds * SAMPLE_RATE))
    cache_dir = cfg.cache_dir if cfg.cache == "disk" else None
    pairs = pair_entries(cfg)
    pool = pool_entries(cfg)
    dev_pairs_only = bool(pairs) and all(p.split == "dev" for p in pairs) and bool(cfg.dev_paired_dir)
    if pairs and pool and not dev_pairs_only:
        raise DataError("a config feeds either on-the-fly mixing (speech/noise) or training pairs, not "
                        "both (data.dev_paired_dir may go with mixing: it is then the dev set)")
    if pairs and not pool:
        train = [p for p in pairs if p.split == "train"]
        dev = [p for p in pairs if p.split == "dev"]
        if not train or not dev:
            raise DataError(f"paired data: {len(train)} training and {len(dev)} dev pairs; both are needed "
                            f"(add speakers, a split column or data.dev_paired_dir)")

        def bank(paths: list[Path], what: str, cache: str) -> AudioBank:
            return AudioBank(paths, cache, cache_dir, progress, what)

        ds = PairedDataset(bank([p.noisy for p in train], "noisy", cfg.cache),
                           bank([p.clean for p in train], "clean", cfg.cache), seed, segment)
        dev_set = _dev_pairs(bank([p.noisy for p in dev], "dev noisy", "memory"),
                             bank([p.clean for p in dev], "dev clean", "memory"), cfg, seed)
        summary = {"source": "paired", "train_pairs": len(train), "dev_pairs": len(dev_set)}
        return RunData(ds, dev_set, "paired", summary)
    if not pool:
        raise DataError("no training data: set data.manifest, data.speech_dirs + data.noise_dirs or "
                        "data.paired_dir")
    if cfg.cache == "none":
        raise DataError("data.cache = none is for paired corpora; mixing pools need memory or disk")
    groups = {(k, s): [e for e in pool if e.kind == k and e.split == s]
              for k in ("speech", "noise") for s in ("train", "dev")}
    if dev_pairs_only:  # the dev set is the pairs: no dev mixtures to build
        groups[("speech", "dev")], groups[("noise", "dev")] = [], []

    def measured(split: str) -> list[RIR]:
        if cfg.reverb_prob == 0 or cfg.real_rir_share == 0:
            return []
        return [measured_rir(load_mono_16k(e.path)) for e in pool if e.kind == "rir" and e.split == split]

    real_rirs, dev_real_rirs = measured("train"), measured("dev")
    needed = (("speech", "train"), ("noise", "train")) + (() if dev_pairs_only else (("speech", "dev"),))
    for key in needed:
        if not groups[key]:
            raise DataError(f"no {key[1]} {key[0]} files (dev speakers are held out by data.dev_fraction "
                            f"where the source gives no split)")
    if not groups[("noise", "dev")] and not dev_pairs_only:
        log("data: no dev noise files; the dev mixtures use the training noise")
        groups[("noise", "dev")] = groups[("noise", "train")]
    banks = {key: AudioBank([e.path for e in v], cfg.cache, cache_dir, progress, f"{key[1]} {key[0]}")
             for key, v in groups.items()}
    rirs: list[RIR] = []
    if cfg.reverb_prob > 0:
        backend = rir_backend(cfg.rir_backend)
        if backend == "synthetic" and cfg.rir_backend == "auto":
            log(f"data: pyroomacoustics is not installed ({install_hint('reverb')}); "
                "reverberation uses the synthetic exponential-decay RIR bank")
        rir_cache = cfg.cache_dir if cfg.cache == "disk" else None
        rirs = rir_bank(cfg.rir_count, cfg.rt60, seed, backend, rir_cache)
    spk = {s: [e.speaker for e in groups[("speech", s)]] for s in ("train", "dev")}
    ds = MixingDataset(banks[("speech", "train")], spk["train"], banks[("noise", "train")], cfg, seed,
                       segment, rirs, real_rirs)
    if dev_pairs_only:
        dev_set = _dev_pairs(AudioBank([p.noisy for p in pairs], "memory", None, progress, "dev noisy"),
                             AudioBank([p.clean for p in pairs], "memory", None, progress, "dev clean"),
                             cfg, seed)
    else:
        dev_set = make_dev_mixtures(banks[("speech", "dev")], spk["dev"], banks[("noise", "dev")], cfg,
                                    seed, rirs, dev_real_rirs)
    hours = {f"{s}_{k}_hours": round(sum(banks[(k, s)].lengths) / SAMPLE_RATE / 3600, 3)
             for k in ("speech", "noise") for s in ("train", "dev")}
    weights = np.array([e.weight for e in groups[("speech", "train")]], dtype=np.float64)
    summary = {"source": "mixing", "train_utterances": len(ds),
               "down_weighted_utterances": int(np.sum(weights != 1.0)),
               "train_speakers": len(set(spk["train"])), "dev_speakers": len(set(spk["dev"])),
               "dev_mixtures": len(dev_set), "dev": "pairs" if dev_pairs_only else "mixtures",
               "rirs": len(rirs), "measured_rirs": len(real_rirs), **hours}
    return RunData(ds, dev_set, "mixing", summary, None if np.all(weights == 1.0) else weights)


def iterate_batches(dataset: torch.utils.data.Dataset, batches: Sequence[Sequence[Any]],
                    num_workers: int = 0, pin_memory: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(noisy (B, L), clean (B, L)) for each batch of keys, loaded by ``num_workers`` processes
    (which ignore SIGINT: the training loop handles Ctrl-C)."""
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=list(batches), num_workers=num_workers,
                                         pin_memory=pin_memory, worker_init_fn=_worker_init if num_workers
                                         else None)
    yield from loader


def _worker_init(_: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = [
    "AudioBank", "DataError", "Entry", "EpochBatches", "Mixture", "MixingDataset", "PairEntry",
    "PairedDataset", "RIR", "RunData", "build_run_data", "check_data_paths", "crop", "held_out",
    "iterate_batches",
    "list_audio", "load_mono_16k", "make_dev_mixtures", "pair_entries", "pool_entries", "random_biquad",
    "read_manifest", "reverberate", "rir_bank", "rir_backend", "rms", "speaker_of", "synthetic_rir",
]
