"""Evaluation of one or several models on a folder of noisy files (VCTK-DEMAND layout).

Noisy and clean files are paired by their path relative to the two folders (same names).
Each noisy file is downmixed to mono, brought to ``metric_rate`` (16 kHz by default, the
model's own rate, so 48 kHz corpora are scored like the published GTCRN results), enhanced
by every model and scored against the clean file:

* intrusive (needs the clean folder): PESQ-WB (at 16 kHz), PESQ-NB (at 8 kHz), STOI, ESTOI,
  SI-SDR and its improvement over the noisy input (SI-SDRi);
* non-intrusive: DNSMOS SIG/BAK/OVRL when the ``dnsmos`` extra is installed (the only
  metrics available without clean references).

The unprocessed input is always scored as the first system, ``"noisy"``. Results go to a
per-file CSV (one row per file, one ``<system>/<metric>`` column per system and metric), a
summary JSON (means per system, PESQ failures counted and listed) and a Markdown table.
PESQ failures (no utterance detected, e.g. a silent file) never abort a run: the value is
left empty and excluded from the mean.

:func:`evaluate_pairs` scores in-memory pairs for the trainer's validation.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from .audio import AudioError, one_line, read_audio, resample, write_audio
from .checkpoint import model_from_spec, split_spec
from .extras import install_hint
from .metrics import METRIC_KEYS, compute_metrics, dnsmos, dnsmos_available
from .nn import GTCRN
from .stft import SAMPLE_RATE

NOISY = "noisy"
DNSMOS_COLUMNS: dict[str, str] = {"dnsmos_sig": "SIG", "dnsmos_bak": "BAK", "dnsmos_ovrl": "OVRL"}
FAST_KEYS: tuple[str, ...] = ("pesq_wb", "stoi", "si_sdr", "si_sdr_i", "speech_gain")
# Columns whose table cell is the median over the files, not the mean (a level in dB).
MEDIAN_COLUMNS: frozenset[str] = frozenset({"speech_gain"})
CSV_NAME = "per_file.csv"
JSON_NAME = "summary.json"
MARKDOWN_NAME = "summary.md"
# Markdown header and number format of each column.
_COLUMNS: dict[str, tuple[str, str]] = {
    "pesq_wb": ("PESQ-WB", "{:.3f}"), "pesq_nb": ("PESQ-NB", "{:.3f}"),
    "stoi": ("STOI", "{:.4f}"), "estoi": ("ESTOI", "{:.4f}"),
    "si_sdr": ("SI-SDR (dB)", "{:.2f}"), "si_sdr_i": ("SI-SDRi (dB)", "{:.2f}"),
    "speech_gain": ("speech gain (dB, median)", "{:.2f}"),
    "dnsmos_sig": ("DNSMOS SIG", "{:.3f}"), "dnsmos_bak": ("DNSMOS BAK", "{:.3f}"),
    "dnsmos_ovrl": ("DNSMOS OVRL", "{:.3f}"),
}


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says why."""


# ---- models ------------------------------------------------------------------------------------

def load_model_spec(spec: str) -> tuple[str | None, GTCRN]:
    """``[LABEL=]SPEC`` -> (label or None, model), SPEC as :func:`gtcrn.checkpoint.model_from_spec`
    reads it (a preset name: its shipped weights; ``upstream:PATH``; a checkpoint path;
    ``untrained:NAME``). The label is ``None`` when the spec has no ``LABEL=`` prefix (see
    :func:`default_label`).
    """
    label, body = _split_label(spec)
    return label, model_from_spec(body)


def _split_label(spec: str) -> tuple[str | None, str]:
    name, sep, body = spec.partition("=")
    if sep and name and "/" not in name and "\\" not in name and ":" not in name:
        return name, body
    return None, spec


def _spec_target(spec: str) -> str:
    """The path or preset name a spec refers to (prefixes removed)."""
    return split_spec(_split_label(spec)[1])[1]


def default_label(spec: str) -> str:
    """A short label for a model spec: its ``NAME=`` prefix, the preset name or the file stem
    (``untrained-NAME`` for an untrained model)."""
    label = _split_label(spec)[0]
    if label:
        return label
    target = _spec_target(spec)
    name = Path(target).stem if target.endswith((".pt", ".pth", ".tar", ".ckpt", ".yaml", ".yml")) \
        else Path(target).name
    return f"untrained-{name}" if split_spec(_split_label(spec)[1])[0] == "untrained" else name


def unique_labels(specs: Sequence[str]) -> list[str]:
    """:func:`default_label` of each spec, widened with the parent folder where two collide."""
    labels = [default_label(s) for s in specs]
    first = list(labels)
    for i, spec in enumerate(specs):
        if first.count(first[i]) > 1 and _split_label(spec)[0] is None:
            path = Path(_spec_target(spec))
            labels[i] = f"{path.parent.name}/{labels[i]}" if path.parent.name else labels[i]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise EvaluationError(f"model label(s) {dupes} used twice; name them with NAME=SPEC")
    return labels


# ---- enhancement -------------------------------------------------------------------------------

def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def enhance_signal(model: GTCRN, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Enhance a mono float signal (N,) at any rate with ``model``; returns (N,) float32.

    Goes through :func:`gtcrn.inference.enhance` (the user-facing path, on the model's device);
    a tree without ``gtcrn.inference`` falls back to ``model.enhance_waveform`` at 16 kHz with
    resampling around it.
    """
    x = np.asarray(audio, dtype=np.float32)
    try:
        from .inference import enhance
    except ImportError:
        enhance = None
    if enhance is not None:
        return np.asarray(enhance(x, sample_rate, model=model), dtype=np.float32)
    x16 = resample(x, sample_rate, SAMPLE_RATE)
    with torch.inference_mode():
        wav = torch.from_numpy(np.ascontiguousarray(x16)).to(_model_device(model))  # (N16,)
        y16 = model.enhance_waveform(wav).float().cpu().numpy()  # (N16,)
    y = resample(y16, SAMPLE_RATE, sample_rate)
    return _fit(y, x.size)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad a 1-D signal to ``n`` samples."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


# ---- files -------------------------------------------------------------------------------------

AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"})


def find_pairs(noisy_dir: str | Path, clean_dir: str | Path | None = None, strict: bool = True
               ) -> list[tuple[str, Path, Path | None]]:
    """Audio files under ``noisy_dir`` (recursive, sorted) as (relative path, noisy path, clean
    path or None), paired by relative path. With ``strict`` every noisy file must have its clean
    file (else :class:`EvaluationError`); without, a missing one is left for the caller to report."""
    noisy_dir = Path(noisy_dir)
    if not noisy_dir.is_dir():
        raise EvaluationError(f"{noisy_dir}: no such folder")
    if clean_dir is not None and not Path(clean_dir).is_dir():
        raise EvaluationError(f"{clean_dir}: no such folder")
    files = sorted(p for p in noisy_dir.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise EvaluationError(f"{noisy_dir}: no audio files found")
    pairs: list[tuple[str, Path, Path | None]] = []
    missing: list[str] = []
    for path in files:
        rel = path.relative_to(noisy_dir).as_posix()
        clean = None
        if clean_dir is not None:
            clean = Path(clean_dir) / rel
            if not clean.is_file():
                missing.append(rel)
        pairs.append((rel, path, clean))
    if missing and strict:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EvaluationError(f"{clean_dir}: no clean file for {', '.join(missing[:3])}{more} "
                              "(noisy and clean files are paired by relative path)")
    return pairs


def _mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,) by averaging the channels."""
    return audio.mean(axis=0) if audio.ndim == 2 else audio


# ---- evaluation --------------------------------------------------------------------------------

def _score(clean: np.ndarray | None, signal: np.ndarray, noisy: np.ndarray, rate: int,
           keys: Sequence[str], use_dnsmos: bool) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    if clean is not None:
        row.update(compute_metrics(clean, signal, rate, noisy=noisy, metrics=keys))
    if use_dnsmos:
        mos = dnsmos(signal, rate, required=True)
        for col, key in DNSMOS_COLUMNS.items():
            row[col] = None if mos is None else mos[key]
    return row


def _mean(values: Iterable[float | None]) -> float | None:
    good = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(good)) if good else None


def _median(values: Iterable[float | None]) -> float | None:
    good = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.median(good)) if good else None


LENGTH_TOLERANCE_S = 0.01  # noisy and clean lengths that differ by more are warned about


def evaluate(models: Mapping[str, GTCRN], noisy_dir: str | Path, clean_dir: str | Path | None = None,
             out_dir: str | Path | None = None, *, metric_rate: int | None = SAMPLE_RATE,
             use_dnsmos: bool | None = None, fast: bool = False, save_audio: bool = False,
             progress: bool | None = False, report: Callable[[str], None] | None = None,
             warn: Callable[[str], None] | None = None, shard: tuple[int, int] | None = None
             ) -> dict[str, Any]:
    """Score the noisy input and every model's output; return the summary dict.

    ``models`` maps labels to models (the label ``"noisy"`` is reserved). ``metric_rate``:
    rate at which signals are enhanced and scored (``None``: each file's own rate).
    ``use_dnsmos``: ``None`` = when installed; ``True`` raises :class:`EvaluationError` when it
    is not. ``fast`` skips PESQ-NB and ESTOI. With ``out_dir``, writes ``per_file.csv``,
    ``summary.json`` and ``summary.md`` there (and with ``save_audio`` the enhanced files under
    ``out_dir/<label>/<relative path>`` at the scoring rate).

    A pair that cannot be scored (no clean file, an unreadable file) is left out, reported
    through ``report(one line naming the file)`` and listed in ``"failed"``; the others are
    scored. A pair whose noisy and clean lengths differ by more than
    :data:`LENGTH_TOLERANCE_S` is scored over the shorter one and warned about (``warn`` and
    ``"warnings"``). ``progress``: a tqdm bar on stderr (``None``: when it is a terminal).

    Summary: ``{"noisy_dir", "clean_dir", "metric_rate", "num_files", "metrics": [...],
    "systems": {label: {"mean": {metric: value|None}, "count": {metric: n},
    "pesq_failures": n, "pesq_failed_files": [...]}}, "failed": [{"file", "error"}],
    "warnings": [str], "markdown": str}`` with ``"noisy"`` first; a PESQ failure is a file where
    PESQ-WB or PESQ-NB could not be computed.

    ``shard``: ``(I, N)`` scores only shard I of N of the pairs (partitioned by duration, as
    :func:`gtcrn.corpus.partition` does for ``gtcrn enhance``) and writes its part to
    ``out_dir`` (required): ``per_file.part-I-of-N.csv`` and ``summary.part-I-of-N.json``, which
    :func:`merge_evaluation` turns into the files of one unsharded run. The summary returned is
    the shard's.
    """
    if NOISY in models:
        raise EvaluationError(f"the label {NOISY!r} is reserved for the unprocessed input")
    available = dnsmos_available()
    if use_dnsmos and not available:
        raise EvaluationError(f"DNSMOS is not installed: {install_hint('dnsmos')}")
    use_dnsmos = available if use_dnsmos is None else use_dnsmos
    if clean_dir is None and not use_dnsmos:
        raise EvaluationError(
            "without clean references only DNSMOS can be computed, and "
            + ("it was switched off" if available else f"it is not installed: {install_hint('dnsmos')}"))
    pairs = find_pairs(noisy_dir, clean_dir, strict=False)
    corpus_pairs = len(pairs)
    if shard is not None:
        from .corpus import check_shard, partition, probe

        if out_dir is None:
            raise EvaluationError("a sharded evaluation writes its part to an output folder: give one")
        shard = check_shard(shard)
        infos = [probe(path) for _, path, _ in pairs]
        mine = partition([rel for rel, _, _ in pairs], [i.weight if i else 0 for i in infos],
                         shard[1])[shard[0]]
        pairs = [pairs[i] for i in sorted(mine)]  # in find_pairs' order
    keys = ([k for k in METRIC_KEYS if not fast or k in FAST_KEYS] if clean_dir is not None else [])
    columns = keys + (list(DNSMOS_COLUMNS) if use_dnsmos else [])
    systems = [NOISY, *models]
    out = Path(out_dir) if out_dir is not None else None

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    warnings: list[str] = []
    warned: list[dict[str, str]] = []  # the warnings with their file, for a shard's part
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(pairs, desc="evaluate", unit="file", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def say(callback: Callable[[str], None] | None, message: str) -> None:
        if callback is not None:
            with tqdm.external_write_mode(file=sys.stderr):
                callback(message)

    for rel, noisy_path, clean_path in bar:
        try:
            row, warning = _score_pair(rel, noisy_path, clean_path, models, systems, metric_rate, keys,
                                       use_dnsmos, out if save_audio else None)
        except (AudioError, OSError) as exc:
            message = one_line(exc)
            failed.append({"file": rel, "error": message})
            say(report, message)
            continue
        except Exception as exc:  # keep going over the other pairs
            message = f"{noisy_path}: {type(exc).__name__}: {one_line(exc)}"
            failed.append({"file": rel, "error": message})
            say(report, message)
            continue
        if warning:
            warnings.append(warning)
            warned.append({"file": rel, "warning": warning})
            say(warn, warning)
        rows.append(row)
    bar.close()

    summary = summarize(rows, failed, warnings, columns, systems, noisy_dir=noisy_dir,
                        clean_dir=clean_dir, metric_rate=metric_rate)
    if out is not None and shard is None:
        write_results(out, rows, summary)
    elif out is not None and shard is not None:
        write_part(out, shard, rows, summary, [rel for rel, _, _ in pairs], corpus_pairs, warned)
    return summary


def summarize(rows: Sequence[Mapping[str, Any]], failed: Sequence[Mapping[str, str]],
              warnings: Sequence[str], columns: Sequence[str], systems: Sequence[str], *,
              noisy_dir: str | Path, clean_dir: str | Path | None, metric_rate: int | None
              ) -> dict[str, Any]:
    """The summary dict of :func:`evaluate` from its per-file rows (in file order), the pairs
    that could not be scored and the warnings: means and medians per system and metric, PESQ
    failures, the Markdown table."""
    keys = [c for c in columns if c not in DNSMOS_COLUMNS]
    summary: dict[str, Any] = {
        "noisy_dir": str(noisy_dir), "clean_dir": None if clean_dir is None else str(clean_dir),
        "metric_rate": metric_rate, "num_files": len(rows), "metrics": list(columns), "systems": {},
        "failed": list(failed), "warnings": list(warnings),
    }
    for label in systems:
        pesq_failed = [r["file"] for r in rows
                       if any(k in keys and r.get(f"{label}/{k}") is None for k in ("pesq_wb", "pesq_nb"))]
        summary["systems"][label] = {
            "mean": {c: _mean(r.get(f"{label}/{c}") for r in rows) for c in columns},
            "median": {c: _median(r.get(f"{label}/{c}") for r in rows) for c in columns},
            "count": {c: sum(r.get(f"{label}/{c}") is not None for r in rows) for c in columns},
            "pesq_failures": len(pesq_failed),
            "pesq_failed_files": pesq_failed,
        }
    summary["markdown"] = markdown_table(summary)
    return summary


def _score_pair(rel: str, noisy_path: Path, clean_path: Path | None, models: Mapping[str, GTCRN],
                systems: Sequence[str], metric_rate: int | None, keys: Sequence[str], use_dnsmos: bool,
                save_to: Path | None) -> tuple[dict[str, Any], str | None]:
    """One pair's CSV row (every system's scores) and a warning about its lengths, or None."""
    if clean_path is not None and not clean_path.is_file():
        raise AudioError(f"{clean_path}: no clean file for {rel} (noisy and clean files are paired by "
                         f"relative path)")
    audio, sr, _ = read_audio(noisy_path)
    rate = metric_rate or sr
    noisy = resample(_mono(audio), sr, rate)  # (N,)
    clean = None
    warning = None
    if clean_path is not None:
        c_audio, c_sr, _ = read_audio(clean_path)
        clean = resample(_mono(c_audio), c_sr, rate)  # (N',)
        if abs(noisy.size - clean.size) > LENGTH_TOLERANCE_S * rate:
            shorter = min(noisy.size, clean.size) / rate
            warning = (f"{noisy_path}: {noisy.size / rate:.3f} s long, its clean file {clean_path} "
                       f"{clean.size / rate:.3f} s; scored over the first {shorter:.3f} s")
        n = min(noisy.size, clean.size)
        noisy, clean = noisy[:n], clean[:n]
    row: dict[str, Any] = {"file": rel, "sample_rate": sr, "duration_s": round(noisy.size / rate, 4)}
    for label in systems:
        signal = noisy if label == NOISY else enhance_signal(models[label], noisy, rate)
        if save_to is not None and label != NOISY:
            dest = save_to / label / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_audio(dest, signal, rate)
        for key, value in _score(clean, signal, noisy, rate, keys, use_dnsmos).items():
            row[f"{label}/{key}"] = value
    return row, warning


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The summary's mean metrics as a Markdown table, one row per system (noisy first)."""
    columns = list(summary["metrics"])
    lines = ["| system | " + " | ".join(_COLUMNS[c][0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, info in summary["systems"].items():
        cells = []
        for c in columns:
            v = info["median" if c in MEDIAN_COLUMNS else "mean"].get(c)
            cells.append("n/a" if v is None else _COLUMNS[c][1].format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{summary['num_files']} file(s); means over the files each metric could score"
                 + (", medians for the speech gain." if "speech_gain" in columns else "."))
    for label, info in summary["systems"].items():
        if info["pesq_failures"]:
            lines.append(f"PESQ failed on {info['pesq_failures']} file(s) for {label} (no utterance "
                         f"detected, or silence): {', '.join(info['pesq_failed_files'][:5])}"
                         + (" ..." if info["pesq_failures"] > 5 else ""))
    failed = summary.get("failed") or []
    if failed:
        lines.append(f"{len(failed)} file(s) could not be scored and are left out: "
                     + ", ".join(f["file"] for f in failed[:5]) + (" ..." if len(failed) > 5 else ""))
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
                  ) -> dict[str, Path]:
    """Write ``per_file.csv``, ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = _fields(summary)
    csv_path, json_path, md_path = out / CSV_NAME, out / JSON_NAME, out / MARKDOWN_NAME
    _atomic_text(csv_path, _csv_text(fields, rows))
    data = {k: v for k, v in summary.items() if k != "markdown"}
    _atomic_text(json_path, json.dumps(data, indent=2) + "\n")
    _atomic_text(md_path, summary.get("markdown") or markdown_table(summary))
    return {"csv": csv_path, "json": json_path, "markdown": md_path}


PART_KIND = "gtcrn evaluate part"


def _part_names(shard: tuple[int, int]) -> tuple[str, str]:
    index, count = shard
    return f"per_file.part-{index}-of-{count}.csv", f"summary.part-{index}-of-{count}.json"


def write_part(out_dir: str | Path, shard: tuple[int, int], rows: Sequence[Mapping[str, Any]],
               summary: Mapping[str, Any], files: Sequence[str], corpus_pairs: int,
               warnings: Sequence[Mapping[str, str]]) -> dict[str, Path]:
    """Write shard ``I/N``'s part into ``out_dir``: ``per_file.part-I-of-N.csv`` (the rows, as
    ``per_file.csv``) and ``summary.part-I-of-N.json`` (the shard's files, the pairs that could
    not be scored, the warnings with their file, and what the merge checks them against)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_name, json_name = _part_names(shard)
    _atomic_text(out / csv_name, _csv_text(_fields(summary), rows))
    data = {"part": PART_KIND, "version": 1, "shard": shard[0], "shards": shard[1],
            "corpus_pairs": corpus_pairs, "noisy_dir": summary["noisy_dir"],
            "clean_dir": summary["clean_dir"], "metric_rate": summary["metric_rate"],
            "metrics": list(summary["metrics"]), "systems": list(summary["systems"]),
            "files": list(files), "failed": list(summary["failed"]), "warnings": list(warnings)}
    _atomic_text(out / json_name, json.dumps(data, indent=2) + "\n")
    return {"csv": out / csv_name, "json": out / json_name}


def has_parts(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds parts of a sharded evaluation."""
    return any(Path(out_dir).glob("summary.part-*-of-*.json"))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """A per-file CSV back as rows: numbers as floats (the CSV holds their exact repr), an
    empty cell as None."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read ({one_line(exc)})") from None
    rows = []
    for line in table:
        row: dict[str, Any] = {}
        for key, text in line.items():
            if key == "file":
                row[key] = text
            elif key == "sample_rate":
                row[key] = int(text)
            else:
                row[key] = None if text == "" else float(text)
        rows.append(row)
    return rows


def merge_evaluation(out_dir: str | Path) -> dict[str, Any]:
    """Merge the parts that the shards of one evaluation wrote into ``out_dir`` into its
    ``per_file.csv``, ``summary.json`` and ``summary.md``, the same as one unsharded run's;
    return the summary.

    Raises :class:`EvaluationError` when a shard's part is missing or incomplete, when the parts
    disagree (another folder, other models or metrics) or when a pair is in two parts or in
    none.
    """
    from .corpus import ManifestError, find_parts

    out = Path(out_dir)
    try:
        parts = find_parts(list(out.glob("summary.part-*-of-*.json")), str(out))
    except ManifestError as exc:
        raise EvaluationError(str(exc)) from None
    same = ("corpus_pairs", "noisy_dir", "clean_dir", "metric_rate", "metrics", "systems")
    first: dict[str, Any] | None = None
    owner: dict[str, Path] = {}
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    warned: list[dict[str, str]] = []
    for index in sorted(parts):
        path = parts[index]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"{path}: cannot read ({one_line(exc)})") from None
        if not isinstance(data, dict) or data.get("part") != PART_KIND or data.get("version") != 1:
            raise EvaluationError(f"{path}: not a part of a gtcrn evaluation")
        if (data.get("shard"), data.get("shards")) != (index, len(parts)):
            raise EvaluationError(f"{path}: it says shard {data.get('shard')}/{data.get('shards')}")
        if first is None:
            first = data
        else:
            differ = [k for k in same if data.get(k) != first.get(k)]
            if differ:
                raise EvaluationError(f"{path}: {', '.join(differ)} differ from {parts[0]}'s; the "
                                      f"shards must run the same evaluation")
        for rel in data["files"]:
            if rel in owner:
                raise EvaluationError(f"{path}: {rel} is also in {owner[rel]}")
            owner[rel] = path
        part_rows = _read_rows(path.with_name(_part_names((index, len(parts)))[0]))
        scored = [r["file"] for r in part_rows] + [f["file"] for f in data["failed"]]
        if sorted(scored) != sorted(data["files"]):
            raise EvaluationError(f"{path}: {len(scored)} of the shard's {len(data['files'])} pairs "
                                  f"recorded, or not those; run shard {index}/{len(parts)} again")
        rows += part_rows
        failed += data["failed"]
        warned += data["warnings"]
    assert first is not None
    if len(owner) != first["corpus_pairs"]:
        raise EvaluationError(f"{out}: the parts hold {len(owner)} pairs, the evaluation has "
                              f"{first['corpus_pairs']}")

    def order(rel: str) -> tuple[str, ...]:
        return PurePosixPath(rel).parts  # find_pairs' order

    rows.sort(key=lambda r: order(r["file"]))
    failed.sort(key=lambda f: order(f["file"]))
    warned.sort(key=lambda w: order(w["file"]))
    summary = summarize(rows, failed, [w["warning"] for w in warned], first["metrics"],
                        first["systems"], noisy_dir=first["noisy_dir"], clean_dir=first["clean_dir"],
                        metric_rate=first["metric_rate"])
    write_results(out, rows, summary)
    return summary


def _fields(summary: Mapping[str, Any]) -> list[str]:
    return ["file", "sample_rate", "duration_s"] + [
        f"{label}/{c}" for label in summary["systems"] for c in summary["metrics"]]


def _csv_text(fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    return buf.getvalue()


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---- in-memory validation ----------------------------------------------------------------------

def evaluate_pairs(model: GTCRN, pairs: Sequence[tuple[Any, Any]], sample_rate: int = SAMPLE_RATE,
                   fast: bool = False, enhance_fn: Callable[[GTCRN, np.ndarray, int], np.ndarray]
                   | None = None) -> dict[str, float | int | None]:
    """Mean metrics of ``model`` on in-memory (noisy, clean) 1-D pairs (numpy or torch).

    Returns ``pesq_wb``, ``stoi``, ``si_sdr``, ``si_sdr_i``, ``speech_gain`` (the median; the
    others are means) (+ ``pesq_nb`` and ``estoi`` unless ``fast``), ``pesq_failures`` and
    ``num_pairs``. The model is run in eval mode and put back
    in its previous mode afterwards.
    """
    keys = [k for k in METRIC_KEYS if not fast or k in FAST_KEYS]
    enhance_fn = enhance_fn or enhance_signal
    was_training = model.training
    model.eval()
    per_key: dict[str, list[float | None]] = {k: [] for k in keys}
    try:
        for noisy_in, clean_in in pairs:
            noisy = _to_numpy(noisy_in)
            clean = _to_numpy(clean_in)
            n = min(noisy.size, clean.size)
            noisy, clean = noisy[:n], clean[:n]
            est = enhance_fn(model, noisy, sample_rate)
            for k, v in compute_metrics(clean, est, sample_rate, noisy=noisy, metrics=keys).items():
                per_key[k].append(v)
    finally:
        model.train(was_training)
    result: dict[str, float | int | None] = {
        k: (_median if k in MEDIAN_COLUMNS else _mean)(v) for k, v in per_key.items()}
    result["pesq_failures"] = sum(v is None for v in per_key.get("pesq_wb", []))
    result["num_pairs"] = len(pairs)
    return result


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"evaluate_pairs takes 1-D signals, got shape {arr.shape}")
    return arr


__all__ = ["EvaluationError", "NOISY", "default_label", "enhance_signal", "evaluate", "evaluate_pairs",
           "find_pairs", "has_parts", "load_model_spec", "markdown_table", "merge_evaluation",
           "summarize", "unique_labels", "write_part", "write_results"]
