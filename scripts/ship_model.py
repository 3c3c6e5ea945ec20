"""Ship a training run's best checkpoint as the package's pretrained model.

Writes gtcrn/pretrained/NAME.pt (our checkpoint format: config + weights + a training record in
`meta`, no optimizer state) and gtcrn/pretrained/NAME.json (the same record, readable). The record
holds the data manifest's SHA-256, the sources and licences of the pool, steps, hours of audio
seen, throughput and the dev metrics of every epoch (from the run's metrics.csv).

Usage: python scripts/ship_model.py --run-dir runs/g32-cpu [--name gtcrn-g32]
       [--manifest data/pool/manifest.jsonl] [--evaluation eval/summary.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from collections import Counter
from pathlib import Path

import torch

from gtcrn.checkpoint import model_from_checkpoint, pretrained_path, read_checkpoint, save_checkpoint
from gtcrn.complexity import complexity
from gtcrn.training.prepare import file_digest


def read_epochs(run_dir: Path) -> list[dict]:
    """The rows of a run folder's metrics.csv, numbers parsed."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: float(v) if k not in ("epoch", "step") else int(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(fh)]


def wall_hours(run_dir: Path) -> tuple[float, list[str]]:
    """Training wall time of a run plus, through ``train.init_from``, of the runs it started from
    whose folders are still here; with the run folders counted (a source without its folder, such
    as a kept checkpoint, ends the chain)."""
    hours = sum(e.get("epoch_seconds", 0.0) for e in read_epochs(run_dir)) / 3600
    counted = [str(run_dir)]
    init = read_checkpoint(run_dir / "last.pt")["meta"].get("init")
    source = Path(init["source"]) if init else None
    parent = source.parent if source is not None else None
    if parent is not None and (parent / "metrics.csv").is_file() and (parent / "last.pt").is_file():
        more, runs = wall_hours(parent)
        hours += more
        counted += runs
    return hours, counted


def pool_summary(manifest: Path) -> dict:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    hours: Counter = Counter()
    licences: dict[str, set] = {}
    for r in rows:
        hours[(r["kind"], r["split"])] += r["duration"] / 3600
        licences.setdefault(r["source"], set()).add(r["licence"])
    return {
        "manifest_sha256": file_digest(manifest, "sha256"),
        "files": len(rows),
        "hours": {f"{k}/{s}": round(h, 3) for (k, s), h in sorted(hours.items())},
        "sources": {src: sorted(lic) for src, lic in sorted(licences.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--name", default="gtcrn-g32")
    parser.add_argument("--manifest", type=Path, default=Path("data/pool/manifest.jsonl"))
    parser.add_argument("--evaluation", type=Path, help="summary.json of `gtcrn evaluate` to include")
    args = parser.parse_args()

    ckpt = read_checkpoint(args.run_dir / "best.pt")
    model = model_from_checkpoint(ckpt, str(args.run_dir / "best.pt"))
    epochs = read_epochs(args.run_dir)
    best_epoch = ckpt["meta"].get("epoch")
    # The shipped weights are those of the best epoch, so its step and hours are the ones to count.
    best = next((e for e in epochs if e["epoch"] == best_epoch), epochs[-1])
    # A run started from other weights (train.init_from) adds its source's steps and hours.
    init = ckpt["meta"].get("init") or {"steps": 0, "hours_seen": 0.0}
    wall = wall_hours(args.run_dir)
    record = {
        "name": args.name,
        "run_config": ckpt["meta"].get("run_config"),
        "best_epoch": best_epoch,
        "best_step": ckpt["meta"].get("step"),
        "steps_total": best["step"] + int(init["steps"]),
        "hours_of_audio_seen": round(best["hours_seen"] + float(init["hours_seen"]), 3),
        "init_from": ckpt["meta"].get("init"),
        "training_wall_hours": round(wall[0], 3),
        "training_wall_hours_of_runs": wall[1],
        "hardware": f"{platform.machine()} CPU, 1 thread per run (2-core machine)",
        "torch": str(torch.__version__),
        "dev_metrics_per_epoch": epochs,
        "dev_metrics_best": best,
        "complexity": complexity(model),
        "data": pool_summary(args.manifest),
    }
    if args.evaluation:
        record["evaluation"] = json.loads(args.evaluation.read_text())
    out = pretrained_path(args.name)
    save_checkpoint(model, out, meta=record)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
