"""Corpus-scale enhancement: shards, a resumable run manifest, batched model calls.

Shards
------
A corpus is split into ``N`` shards, each run by its own process, on one machine or many.
The shards share nothing but the file system: no process group, no messages. Every process
plans the same jobs from the same arguments (:func:`gtcrn.inference.plan_jobs`), sorts them
by input path and computes the same partition (:func:`partition`): longest file first onto
the shard with the least audio so far, counted in channel-milliseconds (ties: the shard with
fewer files, then the lower index), so that the shards finish together. A shard is
``--shard I/N`` on the command line, or comes from the launcher (:func:`shard_from_env`):
``RANK``/``WORLD_SIZE`` under torchrun, ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``
in a SLURM job array, both combined for torchrun in each task of an array.

Manifest
--------
JSON Lines: a header line, then one line per input of the shard (or of the corpus, once
merged)::

    {"manifest": "gtcrn enhance", "version": 1, "shard": 0, "shards": 2, "inputs": 25,
     "corpus_inputs": 50, "corpus": "<digest of the sorted input paths>"}
    {"input": "in/a.wav", "output": "out/a.wav", "duration_s": 3.2, "status": "written",
     "error": null, "seconds": 0.41}

``status`` is ``written`` (enhanced by this manifest's run, or by an earlier run of it),
``skipped`` (the output existed and no run of this manifest made it) or ``failed``
(``error`` says why, one line naming the file); ``duration_s`` is the input's length
(``null`` when it cannot be read) and ``seconds`` the wall time spent on it. A sharded run
writes the part ``<manifest stem>.part-I-of-N<suffix>``; :func:`merge_manifest` checks
that the parts cover every input exactly once and writes the manifest.

Resuming
--------
Outputs appear only when complete (:func:`gtcrn.inference.enhance_file` renames them into
place), so an existing output is finished: :func:`enhance_corpus` skips it, keeps its line
from the previous run's manifest, removes the hidden ``.NAME.*.part`` files that a killed
run of the same outputs left and enhances the rest.

Batches
-------
With ``batch_seconds``, files of similar length are enhanced together: the channels of
several files are the rows of one :class:`gtcrn.stream.Streamer` batch (at most
``batch_seconds`` of padded 16 kHz audio). Each file is read and resampled to 16 kHz on its
own (as :func:`gtcrn.inference.enhance_file` does), the batch runs the model, and each file
is then written through :func:`gtcrn.inference.enhance_file` with its enhanced 16 kHz signal
replayed (read and resampling again, writing exactly as file by file). Shorter rows are
padded after their end (their own end reflection, then zeros): the model is causal, so the
padding changes none of a row's frames, and the last partial hop of each row, which a
longer batch overlap-adds with a padded frame, is rebuilt from that row's last frame (as
:class:`gtcrn.stream.Streamer` ends a stream). The output equals file-by-file enhancement to
float rounding. Files longer than the batch, and files that cannot be read, are enhanced
file by file (streaming, in bounded memory).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import heapq
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from .audio import AudioError, one_line, open_audio, sf_path
from .engine import Engine
from .inference import (
    BLOCK_SIZE,
    CHUNK_FRAMES,
    BatchResult,
    FileResult,
    _attenuation_mix,
    _eval_mode,
    _FileProgress,
    _model_and_engine,
    _Resampler,
    enhance_job,
    plan_jobs,
    plot_path,
)
from .stft import HOP, N_FFT, SAMPLE_RATE, window
from .stream import PAD, Streamer

Shard = tuple[int, int]  # (index, count), 0 <= index < count

MANIFEST_KIND = "gtcrn enhance"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"  # the default manifest of a sharded run into an output folder
_PART = re.compile(r"\.part-(\d+)-of-(\d+)(?=\.[^.]*$|$)")


class ShardError(ValueError):
    """A shard that makes no sense (index out of range, inconsistent launcher variables)."""


class ManifestError(ValueError):
    """Manifest parts that cannot be merged: the message says which and why."""


# ---- shards ------------------------------------------------------------------------------------

def check_shard(shard: Shard) -> Shard:
    """``shard`` as ``(index, count)`` ints, or :class:`ShardError`."""
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"shard {index}/{count}: the index must be in 0..{count - 1}" if count >= 1
                         else f"shard {index}/{count}: the count must be at least 1")
    return index, count


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ShardError(f"{name}={env[name]!r} is not an integer") from None


def shard_from_env(env: Mapping[str, str]) -> tuple[Shard, str] | None:
    """The shard a launcher gives this process and the variables it comes from, or None.

    * torchrun (or any launcher of ``torch.distributed``): ``RANK`` of ``WORLD_SIZE``;
    * a SLURM job array: ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
      SLURM_ARRAY_TASK_STEP`` of ``SLURM_ARRAY_TASK_COUNT`` (the array may start at any
      index and step by any stride; ``MIN`` 0 and ``STEP`` 1 when they are not set);
    * both (torchrun in each task of an array): ``task * WORLD_SIZE + RANK`` of
      ``COUNT * WORLD_SIZE``.

    Raises :class:`ShardError` when the variables disagree (e.g. a task id outside the array).
    """
    found: list[tuple[Shard, str]] = []
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        task, count = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") if env.get("SLURM_ARRAY_TASK_MIN") else 0
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") if env.get("SLURM_ARRAY_TASK_STEP") else 1
        offset = task - first
        if step < 1 or offset < 0 or offset % step or offset // step >= count:
            raise ShardError(f"SLURM_ARRAY_TASK_ID={task} is not one of the {count} tasks of an array "
                             f"starting at {first} in steps of {step}; give the shard with --shard I/N")
        found.append(((offset // step, count), "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"))
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
        try:
            found.append((check_shard((rank, world)), "RANK/WORLD_SIZE"))
        except ShardError:
            raise ShardError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})") from None
    if not found:
        return None
    if len(found) == 2:
        (task, tasks), (rank, world) = found[0][0], found[1][0]
        return (task * world + rank, tasks * world), f"{found[0][1]} and {found[1][1]}"
    return found[0]


def resolve_shard(shard: Shard | None, env: Mapping[str, str]) -> tuple[Shard | None, str]:
    """The shard to run: ``shard`` when given, else the launcher's (:func:`shard_from_env`);
    ``None`` when there is only one (``0/1``). Also says where it came from."""
    if shard is not None:
        shard, source = check_shard(shard), "--shard"
    else:
        from_env = shard_from_env(env)
        if from_env is None:
            return None, ""
        shard, source = from_env
    return (shard if shard[1] > 1 else None), source


def partition(keys: Sequence[str], weights: Sequence[int], count: int) -> list[list[int]]:
    """Split items into ``count`` shards of about equal total weight, the same in every process.

    Greedy, heaviest first (ties: by key), onto the shard with the least weight so far (ties:
    fewer items, then the lower index). Returns each shard's item indices in key order.
    """
    if len(keys) != len(weights):
        raise ValueError("one weight per key")
    heap = [(0, 0, s) for s in range(count)]  # (weight so far, items so far, shard index)
    shards: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(keys)), key=lambda i: (-weights[i], keys[i])):
        load, items, s = heapq.heappop(heap)
        shards[s].append(i)
        heapq.heappush(heap, (load + weights[i], items + 1, s))
    return [sorted(items, key=lambda i: keys[i]) for items in shards]


def local_device(device: str, env: Mapping[str, str]) -> str:
    """``cuda`` under a launcher that starts several processes per machine (``LOCAL_RANK``):
    ``cuda:LOCAL_RANK`` modulo the GPUs there are, so that each process has its own GPU."""
    if device != "cuda" or "LOCAL_RANK" not in env or not torch.cuda.is_available():
        return device
    return f"cuda:{_env_int(env, 'LOCAL_RANK') % torch.cuda.device_count()}"


# ---- inputs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns from a file's header."""

    frames: int
    rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    @property
    def weight(self) -> int:
        """Channel-milliseconds: the work it takes to enhance the file."""
        return (self.frames * self.channels * 1000 + self.rate // 2) // self.rate

    @property
    def frames16(self) -> int:
        """About how many samples it has at 16 kHz."""
        return math.ceil(self.frames * SAMPLE_RATE / self.rate)


def probe(path: Path | None) -> AudioInfo | None:
    """Frames, rate and channels from the header, or None when it cannot be read (the file is
    then enhanced file by file, which reports why)."""
    if path is None:
        return None
    try:
        info = sf.info(sf_path(path))
    except Exception:  # reported, one line naming the file, when it is enhanced
        return None
    if info.samplerate <= 0 or info.channels <= 0:
        return None
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def corpus_digest(keys: Sequence[str]) -> str:
    """A short digest of the sorted input paths: parts of one corpus carry the same one."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(os.fsencode(key) + b"\0")
    return h.hexdigest()[:16]


# ---- manifest ----------------------------------------------------------------------------------

def part_path(manifest: str | Path, shard: Shard) -> Path:
    """The part of ``manifest`` that shard ``I/N`` writes: ``<stem>.part-I-of-N<suffix>``."""
    manifest = Path(manifest)
    index, count = shard
    return manifest.with_name(f"{manifest.stem}.part-{index}-of-{count}{manifest.suffix}")


def shard_of_part(path: str | Path) -> Shard | None:
    """``(I, N)`` from a part's name, or None when the name is not a part's."""
    match = _PART.search(Path(path).name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_parts(paths: Sequence[Path], what: str) -> dict[int, Path]:
    """Parts of one sharded run by shard index, checked complete: one count ``N``, every index
    ``0..N-1`` once. ``what`` names them in errors."""
    by_count: dict[int, dict[int, Path]] = {}
    for path in sorted(paths):
        shard = shard_of_part(path)
        if shard is None:
            continue
        index, count = shard
        by_count.setdefault(count, {})[index] = path
    if not by_count:
        raise ManifestError(f"{what}: no parts (*.part-I-of-N.*) to merge")
    if len(by_count) > 1:
        raise ManifestError(f"{what}: parts of {len(by_count)} different shardings ("
                            + ", ".join(f"of {n}" for n in sorted(by_count))
                            + "); remove the parts of the runs that are not wanted")
    count, parts = next(iter(by_count.items()))
    missing = [i for i in range(count) if i not in parts]
    if missing:
        raise ManifestError(f"{what}: no part for shard(s) {', '.join(f'{i}/{count}' for i in missing)} "
                            f"(run them, then merge)")
    return parts


def read_manifest(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A manifest's header and records. A last line cut short (a killed writer) is left out."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read ({one_line(exc)})") from None
    lines = text.split("\n")
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: written when the run was killed
                break
            raise ManifestError(f"{path}: line {number} is not JSON") from None
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: line {number} is not a JSON object")
        entries.append(entry)
    if not entries or entries[0].get("manifest") != MANIFEST_KIND:
        raise ManifestError(f"{path}: not a gtcrn enhance manifest (no header line)")
    header = entries[0]
    if header.get("version") != MANIFEST_VERSION:
        raise ManifestError(f"{path}: manifest version {header.get('version')}, this gtcrn reads "
                            f"{MANIFEST_VERSION}")
    records = entries[1:]
    for number, record in enumerate(records, 2):
        if "input" not in record or "status" not in record:
            raise ManifestError(f"{path}: line {number} has no input or status")
    return header, records


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _line(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry) + "\n"  # ASCII: names that are not UTF-8 survive as \udcXX escapes


class ManifestWriter:
    """A manifest (part) being written: the header and the carried lines at once (atomically),
    then one line per input as it finishes, each flushed so that a killed run keeps them."""

    def __init__(self, path: str | Path, header: Mapping[str, Any],
                 carried: Sequence[Mapping[str, Any]] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, "".join(_line(e) for e in [header, *carried]))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, record: Mapping[str, Any]) -> None:
        self._fh.write(_line(record))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class MergedManifest:
    """Outcome of :func:`merge_manifest`."""

    path: Path
    shards: int
    records: list[dict[str, Any]]

    def count(self, status: str) -> int:
        return sum(r.get("status") == status for r in self.records)


def merge_manifest(manifest: str | Path) -> MergedManifest:
    """Merge the parts ``<stem>.part-I-of-N<suffix>`` of ``manifest`` into ``manifest``.

    Checks that every shard has its part, that the parts come from one corpus (the same
    digest and input count), that each part is complete (a line for every input of its
    shard: a shard that was stopped has fewer) and that no input is in two parts; raises
    :class:`ManifestError` naming the problem otherwise. The manifest's lines are sorted by
    input path; the parts are left as they are.
    """
    manifest = Path(manifest)
    pattern = f"{glob.escape(manifest.stem)}.part-*-of-*{glob.escape(manifest.suffix)}"
    parts = find_parts([Path(p) for p in glob.glob(str(manifest.parent / pattern))], str(manifest))
    owner: dict[str, Path] = {}
    records: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for index in sorted(parts):
        path = parts[index]
        header, lines = read_manifest(path)
        if (header.get("shard"), header.get("shards")) != (index, len(parts)):
            raise ManifestError(f"{path}: its header says shard {header.get('shard')}/"
                                f"{header.get('shards')}")
        if first is None:
            first = header
        elif (header.get("corpus"), header.get("corpus_inputs")) != (first["corpus"],
                                                                      first["corpus_inputs"]):
            raise ManifestError(f"{path}: from another corpus than {parts[0]} (the inputs changed "
                                f"between the shards' runs); run the shards again with the same inputs")
        for record in lines:
            key = record["input"]
            if key in owner:
                where = "twice in it" if owner[key] == path else f"also in {owner[key]}"
                raise ManifestError(f"{path}: input {key} is {where}")
            owner[key] = path
        if len(lines) != header.get("inputs"):
            raise ManifestError(f"{path}: {len(lines)} of the shard's {header.get('inputs')} inputs "
                                f"recorded: shard {index}/{len(parts)} did not finish; run it again")
        records += lines
    assert first is not None
    if len(records) != first["corpus_inputs"]:
        raise ManifestError(f"{manifest}: the parts hold {len(records)} inputs, the corpus has "
                            f"{first['corpus_inputs']}")
    records.sort(key=lambda r: r["input"])
    header = {**first, "shard": 0, "shards": 1, "inputs": len(records), "merged_from": len(parts)}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(manifest, "".join(_line(e) for e in [header, *records]))
    return MergedManifest(manifest, len(parts), records)


# ---- batched enhancement -----------------------------------------------------------------------

def enhance_streams(model: nn.Module, streams: Sequence[np.ndarray], max_frames: int = CHUNK_FRAMES
                    ) -> list[np.ndarray]:
    """Enhance 16 kHz streams of different lengths as one batch; equal (to float rounding) to
    enhancing each on its own with a :class:`gtcrn.stream.Streamer`.

    ``streams``: float32 arrays ``(C_i, n_i)`` with ``n_i > 256`` (shorter ones need the
    streamer's own end padding). Their channels are the rows of one batch, each padded after
    its end with its end reflection (what the streamer appends when a stream ends) and zeros;
    the last ``n_i % 256`` samples of a row are rebuilt from its last frame, which a stream
    ending there overlap-adds alone (see :mod:`gtcrn.stream`). Returns ``(C_i, n_i)`` float32.
    """
    rows = [np.asarray(r, dtype=np.float32) for s in streams for r in np.atleast_2d(s)]
    lengths = [r.shape[0] for r in rows]
    if not rows:
        return []
    if min(lengths) <= PAD:
        raise ValueError(f"batched streams need more than {PAD} samples each, got {min(lengths)}")
    batch = np.zeros((len(rows), max(lengths) + PAD), np.float32)  # (R, L + 256)
    for r, (x, n) in enumerate(zip(rows, lengths, strict=True)):
        batch[r, :n] = x
        batch[r, n:n + PAD] = x[n - PAD - 1:n - 1][::-1]  # x[n-2], ..., x[n-257]
    last_frame = [n // HOP for n in lengths]  # a stream of n samples has n // 256 + 1 frames
    tails: dict[int, torch.Tensor] = {}
    seen = 0

    def keep_last_frames(noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        nonlocal seen
        count = enhanced.shape[2]
        for r, t in enumerate(last_frame):
            if lengths[r] % HOP and seen <= t < seen + count:
                tails[r] = enhanced[r, :, t - seen].detach().clone()  # (257, 2)
        seen += count

    streamer = Streamer(model, max_frames=max_frames, on_spectra=keep_last_frames, engine="torch")
    with _eval_mode(model):
        out = np.concatenate([streamer.feed(batch), streamer.flush()], axis=1)  # (R, L + 256)
    results = []
    for r, n in enumerate(lengths):
        y = out[r, :n].copy()
        rest = n % HOP
        if rest:  # as the streamer ends a stream: the last frame's second half over its window
            spec = tails[r].cpu()  # (257, 2), in the model's dtype
            win = window("cpu", spec.dtype)  # (512,)
            frame = torch.fft.irfft(torch.view_as_complex(spec.contiguous()), n=N_FFT) * win
            y[n - rest:] = (frame[HOP:] / win[HOP:] ** 2)[:rest].float().numpy()
        results.append(y)
    found, r = [], 0
    for s in streams:
        c = np.atleast_2d(s).shape[0]
        found.append(np.stack(results[r:r + c]))
        r += c
    return found


MIN_FILL = 0.8  # a file joins a batch when it is at least this fraction of the batch's longest


def plan_batches(sizes: Sequence[tuple[int, int]], keys: Sequence[str], budget: int,
                 min_fill: float = MIN_FILL) -> list[list[int]]:
    """Group files into batches of at most ``budget`` padded samples: ``sizes`` are (channels,
    samples at 16 kHz). Longest first (ties: by key); a batch takes the next files while its
    rows times its longest length (+ the end padding) stay within the budget and each is at
    least ``min_fill`` as long as the longest (so padding is at most ``1 - min_fill`` of the
    work). Returns lists of indices; a file alone in its list is better enhanced on its own."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][1], keys[i]))
    groups: list[list[int]] = []
    rows = length = 0
    for i in order:
        channels, n = sizes[i]
        if groups and (rows + channels) * length <= budget and n + PAD >= min_fill * length:
            groups[-1].append(i)
            rows += channels
        else:
            groups.append([i])
            rows, length = channels, n + PAD
    return groups


def read16(source: Path, block_size: int = BLOCK_SIZE) -> np.ndarray | None:
    """The file at 16 kHz, (C, n) float32, read and resampled block by block exactly as
    :func:`gtcrn.inference.enhance_file` does; None when it is not readable or not finite
    (then enhancing it file by file says why)."""
    parts = []
    try:
        with open_audio(source) as reader:
            down = _Resampler(reader.samplerate, SAMPLE_RATE, reader.channels)
            done = False
            while not done:
                block = reader.read(block_size, dtype="float32", always_2d=True)  # (n, C)
                done = block.shape[0] < block_size
                if not np.isfinite(block).all():
                    return None
                parts.append(down(block, last=done))
    except (AudioError, OSError, RuntimeError, ValueError, sf.LibsndfileError):
        return None
    return np.ascontiguousarray(np.concatenate(parts).T) if parts else None  # (C, n16)


class _Replay:
    """An :class:`gtcrn.inference.Enhancer` that gives back a signal already enhanced, as many
    samples as it is fed (the rest at ``flush``)."""

    def __init__(self, enhanced: np.ndarray) -> None:
        self._y, self._pos = enhanced, 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        start, self._pos = self._pos, self._pos + samples.shape[-1]
        return self._y[:, start:self._pos]

    def flush(self) -> np.ndarray:
        start, self._pos = self._pos, self._y.shape[1]
        return self._y[:, start:]


# ---- a corpus run ------------------------------------------------------------------------------

@dataclass
class CorpusResult(BatchResult):
    """Outcome of :func:`enhance_corpus`: this shard's files (``results``) and the run."""

    shard: Shard | None = None
    corpus_inputs: int = 0  # input files of the whole corpus
    manifest: Path | None = None  # the manifest (part) written
    batched: int = 0  # files enhanced in batches


def _batches(todo: Sequence[int], files: Sequence[FileResult], infos: Sequence[AudioInfo | None],
             keys: Sequence[str], budget: int, overwrite: bool) -> tuple[list[list[int]], list[int]]:
    """The jobs ``todo`` as batches of several files (:func:`plan_batches`) and files to enhance
    on their own: those of unknown length, shorter than the STFT padding, longer than a batch,
    alone in their batch, or whose output exists (enhancing them says so)."""
    fits: list[int] = []
    sizes: list[tuple[int, int]] = []
    for i in todo:
        info, output = infos[i], files[i].output
        if (info is not None and PAD < info.frames16 and info.channels * (info.frames16 + PAD) <= budget
                and output is not None and (overwrite or not output.exists())):
            fits.append(i)
            sizes.append((info.channels, info.frames16))
    planned = plan_batches(sizes, [keys[i] for i in fits], budget)
    groups = [[fits[k] for k in g] for g in planned if len(g) > 1]
    batched = {i for g in groups for i in g}
    return groups, [i for i in todo if i not in batched]


def _remove_stale_parts(output: Path) -> None:
    """The hidden ``.NAME.*.part`` files that a killed run writing ``output`` left behind."""
    for target in (output, plot_path(output)):
        for stale in glob.glob(str(target.parent / f".{glob.escape(target.name)}.*.part")):
            with contextlib.suppress(OSError):
                os.unlink(stale)


def enhance_corpus(inputs: Sequence[str | Path], output: str | Path | None = None,
                   model: nn.Module | None = None, *, shard: Shard | None = None,
                   manifest: str | Path | None = None, batch_seconds: float | None = None,
                   overwrite: bool = False, skip_existing: bool = True, output_rate: int | None = None,
                   attenuation_limit: float | None = None, plot: bool = False,
                   progress: bool | None = None, report: Callable[[str], None] | None = None,
                   warn: Callable[[str], None] | None = None, chunk_frames: int = CHUNK_FRAMES,
                   block_size: int = BLOCK_SIZE, engine: str | Engine = "auto") -> CorpusResult:
    """Enhance this process's shard of a corpus, resumably, optionally in batches.

    Inputs and output naming as :func:`gtcrn.inference.enhance_paths`. ``shard``: ``(I, N)``
    (see :func:`partition`; ``None``: every file). Existing outputs are skipped
    (``skip_existing``, the default: a re-run resumes), replaced (``overwrite``) or, with
    neither, failures ("output exists"). ``manifest``: write the run manifest there (the part
    :func:`part_path` when ``N > 1``), keeping the lines of a previous run for the outputs it
    made. ``batch_seconds``: enhance files of similar length together, at most that many
    seconds of padded 16 kHz audio per batch (see the module docstring; not with ``plot``).
    ``engine`` (:mod:`gtcrn.engine`) enhances the files taken one at a time; it is built once.
    Batches run on the torch engine, whose streams may be any number.

    Arguments that name nothing (no such file, a pattern that matches nothing, a folder
    without audio) are reported by every shard and recorded by none. A failing file is
    reported through ``report`` and the others go on. Output folders are created before
    the files are enhanced and left in place (other shards may be writing into them).
    """
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing exclude each other")
    if batch_seconds is not None and not batch_seconds > 0:
        raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
    if plot and batch_seconds is not None:
        raise ValueError("plot draws each file's own streamer's spectra: not with batch_seconds")
    model, runner = _model_and_engine(model, engine)
    _attenuation_mix(attenuation_limit)
    shard = check_shard(shard) if shard is not None else None
    index, count = shard or (0, 1)

    jobs = plan_jobs(inputs, output)
    unnamed = [j for j in jobs if j.output is None]  # arguments that name no file to enhance
    files = sorted((j for j in jobs if j.output is not None), key=lambda j: str(j.source))
    keys = [str(j.source) for j in files]
    infos = [probe(j.source) for j in files]
    weights = [info.weight if info is not None else 0 for info in infos]
    mine = partition(keys, weights, count)[index]

    manifest_path = None if manifest is None else (part_path(manifest, (index, count)) if count > 1
                                                   else Path(manifest))
    carried: dict[str, dict[str, Any]] = {}
    if manifest_path is not None and manifest_path.is_file() and not overwrite:
        with contextlib.suppress(ManifestError):
            _, previous = read_manifest(manifest_path)
            carried = {r["input"]: r for r in previous if r.get("status") == "written"}

    results: dict[int, FileResult] = {}
    todo: list[int] = []
    keep: list[dict[str, Any]] = []
    for i in mine:
        job = files[i]
        if job.error is not None:
            results[i] = job
        elif skip_existing and job.output is not None and job.output.is_file():
            results[i] = FileResult(job.source, job.output, skipped=True)
            old = carried.get(keys[i])
            if old is not None and old.get("output") == str(job.output):
                keep.append(old)
        else:
            todo.append(i)
    kept = {r["input"] for r in keep}

    def record(i: int, result: FileResult, seconds: float) -> dict[str, Any]:
        info = infos[i]
        status = "failed" if result.error is not None else "skipped" if result.skipped else "written"
        return {"input": keys[i], "output": str(files[i].output), "status": status,
                "duration_s": None if info is None else round(info.seconds, 3),
                "error": result.error, "seconds": round(seconds, 3)}

    header = {"manifest": MANIFEST_KIND, "version": MANIFEST_VERSION, "shard": index, "shards": count,
              "inputs": len(mine), "corpus_inputs": len(files), "corpus": corpus_digest(keys)}

    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    shares = {i: (infos[i].frames * 1000 + infos[i].rate // 2) // infos[i].rate if infos[i] else 0
              for i in todo}

    def say(callback: Callable[[str], None] | None, message: str) -> None:
        if callback is not None:
            with tqdm.external_write_mode(file=sys.stderr):
                callback(message)

    for job in unnamed:
        say(report, job.error or "")
    writer = ManifestWriter(manifest_path, header, keep) if manifest_path is not None else None
    batched = 0
    try:
        for i in mine:  # what is decided already: failures of planning, skipped outputs
            if i in results:
                result = results[i]
                if result.error is not None:
                    say(report, result.error)
                if writer is not None and keys[i] not in kept:
                    writer.add(record(i, result, 0.0))
        with tqdm(total=sum(shares.values()), desc=f"shard {index}/{count}" if shard else "enhance",
                  unit="s", unit_scale=0.001, disable=not progress, file=sys.stderr,
                  dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} "
                  "s [{elapsed}<{remaining}]") as bar:

            def finish(i: int, result: FileResult, seconds: float, advance: _FileProgress) -> None:
                advance.finish()
                results[i] = result
                for message in result.warnings:
                    say(warn, message)
                if result.error is not None:
                    say(report, result.error)
                if writer is not None:
                    writer.add(record(i, result, seconds))

            def one(i: int, enhancer: Any = None, spent: float = 0.0) -> None:
                job = files[i]
                assert job.source is not None and job.output is not None
                _remove_stale_parts(job.output)
                with contextlib.suppress(OSError):
                    job.output.parent.mkdir(parents=True, exist_ok=True)
                advance = _FileProgress(bar, shares[i])
                start = time.perf_counter()
                result = enhance_job(job, model, output_rate=output_rate,
                                     attenuation_limit=attenuation_limit, overwrite=overwrite, plot=plot,
                                     chunk_frames=chunk_frames, block_size=block_size,
                                     on_progress=None if enhancer is not None else advance,
                                     enhancer=enhancer, engine=runner)
                finish(i, result, spent + time.perf_counter() - start, advance)

            groups: list[list[int]] = []
            singles = list(todo)
            if batch_seconds is not None:
                groups, singles = _batches(todo, files, infos, keys, int(batch_seconds * SAMPLE_RATE),
                                           overwrite)
            for group in groups:
                start = time.perf_counter()
                signals = {i: read16(files[i].source, block_size) for i in group}
                late = [i for i in group if signals[i] is None or signals[i].shape[1] <= PAD]
                ready = [i for i in group if i not in late]
                try:
                    enhanced = enhance_streams(model, [signals[i] for i in ready], chunk_frames)
                except Exception as exc:  # e.g. out of GPU memory: file by file instead
                    say(warn, f"a batch of {len(ready)} files failed ({type(exc).__name__}: "
                              f"{one_line(exc)}); enhancing them one by one")
                    late, ready, enhanced = group, [], []
                spent = time.perf_counter() - start
                total = sum(s.size for s in enhanced) or 1
                for i, y in zip(ready, enhanced, strict=True):
                    one(i, _Replay(y), spent * y.size / total)
                batched += sum(results[i].error is None for i in ready)
                singles += late
            for i in sorted(singles, key=lambda i: keys[i]):
                one(i)
    finally:
        if writer is not None:
            writer.close()
    ordered = [results[i] for i in mine if i in results]
    return CorpusResult(unnamed + ordered, shard=shard, corpus_inputs=len(files),
                        manifest=manifest_path, batched=batched)
