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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import read_audio, resample, write_audio
from .checkpoint import CheckpointError, load_model, load_upstream
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
    """``[NAME=]checkpoint:PATH | upstream:PATH | preset:NAME | PATH`` -> (label or None, model).

    A plain path is read as a gtcrn checkpoint, or else as an official GTCRN checkpoint.
    The label is ``None`` when the spec has no ``NAME=`` prefix (see :func:`default_label`).
    """
    label, body = _split_label(spec)
    kind, _, rest = body.partition(":")
    if kind == "checkpoint" and rest:
        return label, load_model(rest)
    if kind == "upstream" and rest:
        return label, load_upstream(rest)
    if kind == "preset" and rest:
        if Path(rest).exists():
            raise EvaluationError(f"{spec}: 'preset:' takes a preset name, not a path")
        return label, load_model(rest)
    try:
        return label, load_model(body)
    except CheckpointError as exc:
        if not Path(body).is_file():
            raise
        try:
            return label, load_upstream(body)
        except CheckpointError:
            raise exc from None


def _split_label(spec: str) -> tuple[str | None, str]:
    name, sep, body = spec.partition("=")
    if sep and name and "/" not in name and "\\" not in name and ":" not in name:
        return name, body
    return None, spec


def _spec_target(spec: str) -> str:
    """The path or preset name a spec refers to (prefixes removed)."""
    body = _split_label(spec)[1]
    kind, _, rest = body.partition(":")
    return rest if kind in ("checkpoint", "upstream", "preset") and rest else body


def default_label(spec: str) -> str:
    """A short label for a model spec: its ``NAME=`` prefix, the preset name or the file stem."""
    label = _split_label(spec)[0]
    if label:
        return label
    target = _spec_target(spec)
    return Path(target).stem if target.endswith((".pt", ".pth", ".tar", ".ckpt")) else Path(target).name


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


def find_pairs(noisy_dir: str | Path, clean_dir: str | Path | None = None
               ) -> list[tuple[str, Path, Path | None]]:
    """Audio files under ``noisy_dir`` (recursive, sorted) as (relative path, noisy path, clean
    path or None); every noisy file must have a clean file of the same relative path."""
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
    if missing:
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


def evaluate(models: Mapping[str, GTCRN], noisy_dir: str | Path, clean_dir: str | Path | None = None,
             out_dir: str | Path | None = None, *, metric_rate: int | None = SAMPLE_RATE,
             use_dnsmos: bool | None = None, fast: bool = False, save_audio: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Score the noisy input and every model's output; return the summary dict.

    ``models`` maps labels to models (the label ``"noisy"`` is reserved). ``metric_rate``:
    rate at which signals are enhanced and scored (``None``: each file's own rate).
    ``use_dnsmos``: ``None`` = when installed; ``True`` raises :class:`EvaluationError` when it
    is not. ``fast`` skips PESQ-NB and ESTOI. With ``out_dir``, writes ``per_file.csv``,
    ``summary.json`` and ``summary.md`` there (and with ``save_audio`` the enhanced files under
    ``out_dir/<label>/<relative path>`` at the scoring rate).

    Summary: ``{"noisy_dir", "clean_dir", "metric_rate", "num_files", "metrics": [...],
    "systems": {label: {"mean": {metric: value|None}, "count": {metric: n},
    "pesq_failures": n, "pesq_failed_files": [...]}}, "markdown": str}`` with ``"noisy"`` first;
    a PESQ failure is a file where PESQ-WB or PESQ-NB could not be computed.
    """
    if NOISY in models:
        raise EvaluationError(f"the label {NOISY!r} is reserved for the unprocessed input")
    available = dnsmos_available()
    if use_dnsmos and not available:
        raise EvaluationError("DNSMOS is not installed: pip install 'gtcrn[dnsmos]'")
    use_dnsmos = available if use_dnsmos is None else use_dnsmos
    if clean_dir is None and not use_dnsmos:
        raise EvaluationError(
            "without clean references only DNSMOS can be computed, and "
            + ("it was switched off" if available else "it is not installed: pip install 'gtcrn[dnsmos]'"))
    pairs = find_pairs(noisy_dir, clean_dir)
    keys = ([k for k in METRIC_KEYS if not fast or k in FAST_KEYS] if clean_dir is not None else [])
    columns = keys + (list(DNSMOS_COLUMNS) if use_dnsmos else [])
    systems = [NOISY, *models]
    out = Path(out_dir) if out_dir is not None else None

    rows: list[dict[str, Any]] = []
    iterator: Iterable = pairs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(pairs, desc="evaluate", unit="file")
    for rel, noisy_path, clean_path in iterator:
        audio, sr, _ = read_audio(noisy_path)
        rate = metric_rate or sr
        noisy = resample(_mono(audio), sr, rate)  # (N,)
        clean = None
        if clean_path is not None:
            c_audio, c_sr, _ = read_audio(clean_path)
            clean = resample(_mono(c_audio), c_sr, rate)  # (N',)
            n = min(noisy.size, clean.size)
            noisy, clean = noisy[:n], clean[:n]
        row: dict[str, Any] = {"file": rel, "sample_rate": sr, "duration_s": round(noisy.size / rate, 4)}
        for label in systems:
            signal = noisy if label == NOISY else enhance_signal(models[label], noisy, rate)
            if save_audio and out is not None and label != NOISY:
                dest = out / label / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_audio(dest, signal, rate)
            for key, value in _score(clean, signal, noisy, rate, keys, use_dnsmos).items():
                row[f"{label}/{key}"] = value
        rows.append(row)

    summary: dict[str, Any] = {
        "noisy_dir": str(noisy_dir), "clean_dir": None if clean_dir is None else str(clean_dir),
        "metric_rate": metric_rate, "num_files": len(rows), "metrics": columns, "systems": {},
    }
    for label in systems:
        failed = [r["file"] for r in rows
                  if any(k in keys and r.get(f"{label}/{k}") is None for k in ("pesq_wb", "pesq_nb"))]
        summary["systems"][label] = {
            "mean": {c: _mean(r.get(f"{label}/{c}") for r in rows) for c in columns},
            "median": {c: _median(r.get(f"{label}/{c}") for r in rows) for c in columns},
            "count": {c: sum(r.get(f"{label}/{c}") is not None for r in rows) for c in columns},
            "pesq_failures": len(failed),
            "pesq_failed_files": failed,
        }
    summary["markdown"] = markdown_table(summary)
    if out is not None:
        write_results(out, rows, summary)
    return summary


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
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
                  ) -> dict[str, Path]:
    """Write ``per_file.csv``, ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["file", "sample_rate", "duration_s"] + [
        f"{label}/{c}" for label in summary["systems"] for c in summary["metrics"]]
    csv_path, json_path, md_path = out / CSV_NAME, out / JSON_NAME, out / MARKDOWN_NAME
    _atomic_text(csv_path, _csv_text(fields, rows))
    data = {k: v for k, v in summary.items() if k != "markdown"}
    _atomic_text(json_path, json.dumps(data, indent=2) + "\n")
    _atomic_text(md_path, summary.get("markdown") or markdown_table(summary))
    return {"csv": csv_path, "json": json_path, "markdown": md_path}


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
           "find_pairs", "load_model_spec", "markdown_table", "unique_labels", "write_results"]
