"""Score models on each part of the dev set of scripts/build_dev_set.py, as `gtcrn evaluate --compare`
does, and print one table: per part, PESQ (wide-band; narrow-band at 8 kHz for the telephone part,
enhanced through `gtcrn enhance`'s resampling path), SI-SDR, STOI and the median speech gain.

    python scripts/evaluate_dev_set.py --devset data/devset --out eval/dev \\
        --compare dns3=upstream:../shared/upstream-gtcrn/model_trained_on_dns3.tar shipped=gtcrn-g32

Each part's per-file CSV, summary JSON and Markdown table go to OUT/<part>/ (as `gtcrn evaluate
--out` writes them), the combined table to OUT/summary.md. --parts picks some parts only. With all
three wideband parts the table ends with a ``wideband`` column: every wideband file pooled (the
per-file means and the median gain over the 160 files, from the parts' per-file CSVs).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from gtcrn.evaluate import evaluate, load_model_spec, unique_labels

PARTS = ("high_snr", "low_snr", "reverb", "telephone")
TELEPHONE = "telephone"
WIDEBAND = ("high_snr", "low_snr", "reverb")


def pooled(out: Path, parts: tuple[str, ...], systems: list[str]) -> dict:
    """The parts' per-file rows pooled, in the shape of one part's result: per system the mean of
    each metric over the files that have it and the median speech gain."""
    rows: list[dict[str, str]] = []
    for part in parts:
        with (out / part / "per_file.csv").open(encoding="utf-8", newline="") as fh:
            rows += csv.DictReader(fh)
    result = {}
    for label in systems:
        values = {m: [float(r[f"{label}/{m}"]) for r in rows if r.get(f"{label}/{m}")]
                  for m in ("pesq_wb", "si_sdr", "stoi", "speech_gain")}
        result[label] = {"mean": {m: statistics.fmean(v) for m, v in values.items()},
                         "median": {"speech_gain": statistics.median(values["speech_gain"])}}
    return {"num_files": len(rows), "systems": result}


def table(results: dict[str, dict]) -> str:
    """Rows: systems; per part a cell 'PESQ / SI-SDR dB / STOI / gain dB'."""
    parts = list(results)
    systems = list(next(iter(results.values()))["systems"])
    head = "| system | " + " | ".join(
        f"{p} ({'PESQ-NB' if p == TELEPHONE else 'PESQ-WB'} / SI-SDR / STOI / gain)" for p in parts) + " |"
    lines = [head, "|---|" + "---|" * len(parts)]
    for label in systems:
        cells = []
        for p in parts:
            info = results[p]["systems"][label]
            pesq = info["mean"]["pesq_nb" if p == TELEPHONE else "pesq_wb"]
            cells.append(f"{pesq:.2f} / {info['mean']['si_sdr']:.1f} dB / {info['mean']['stoi']:.3f} / "
                         f"{info['median']['speech_gain']:+.1f} dB")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{p} {results[p]['num_files']}" for p in parts)
    return "\n".join(lines) + f"\n\nFiles: {counts}. Means per file; the speech gain is the median.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", default="data/devset", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--compare", nargs="+", required=True, metavar="SPEC")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    args = parser.parse_args()
    models = {label: load_model_spec(spec)[1]
              for label, spec in zip(unique_labels(args.compare), args.compare, strict=True)}
    results = {}
    for part in args.parts:
        telephone = part == TELEPHONE
        results[part] = evaluate(models, args.devset / "noisy" / part, args.devset / "clean" / part,
                                 args.out / part, metric_rate=None if telephone else 16000,
                                 use_dnsmos=False, fast=not telephone)
        print(f"{part}: done", flush=True)
    if all(p in results for p in WIDEBAND):
        results["wideband"] = pooled(args.out, WIDEBAND, list(results[WIDEBAND[0]]["systems"]))
    text = table(results)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    (args.out / "summary.json").write_text(json.dumps(
        {p: {k: v for k, v in r.items() if k != "markdown"} for p, r in results.items()}, indent=1) + "\n",
        encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
