"""Equal-step comparison of ways to start gtcrn-g32 (the quality issue, point 2).

Every variant trains the same steps with the same data, seed, schedule and loss; only the start
differs:

* ``scratch``: continue the from-scratch gtcrn-g32 shipped before the warm start (``--scratch``);
* ``copy``: official DNS3 weights copied wherever they fit, the rest fresh (``train.init_partial``);
* ``freeze``: ``copy``, with the copied blocks frozen for the first epoch;
* ``distill``: ``copy``, with DNS3 as a teacher (its output and encoder features as targets);
* ``freeze-distill``: both (the recipe of the shipped lineage).

Each run validates on the real-use dev set (``data.dev_paired_dir``) after every epoch; the script
ends with one table of the dev figures per variant and step. Usage::

    python scripts/transfer_study.py --scratch OLD_G32.pt \\
        --dns3 ../shared/upstream-gtcrn/model_trained_on_dns3.tar \\
        --out runs/transfer-study [--epochs 2] [--only copy,distill]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import yaml

BASE = {
    "preset": "gtcrn-g32",
    "data": {"manifest": "data/pool/manifest.jsonl", "dev_paired_dir": "data/devset", "segment_seconds": 2.0,
             "snr_db": [-5.0, 20.0], "reverb_prob": 0.3, "real_rir_share": 0.5, "rir_backend": "synthetic",
             "eq_prob": 0.2, "babble_prob": 0.1, "bandlimit_prob": 0.2, "clean_prob": 0.05, "dev_count": 210,
             "dev_seconds": 6.0, "num_workers": 0},
    "train": {"seed": 11, "batch_size": 8, "examples_per_epoch": 3840, "lr": 5.0e-4, "warmup_steps": 50,
              "schedule": "cosine", "final_lr": 1.0e-5, "grad_clip": 5.0, "num_threads": 1,
              "dev_metrics": ["pesq_wb", "stoi", "si_sdr", "speech_gain"], "best_metric": "pesq_wb",
              "progress": False, "log_every": 100, "tensorboard": False},
    "loss": {"level_weight": 10.0},
}


def variants(scratch: str, dns3: str) -> dict[str, dict]:
    """The train overrides of each variant."""
    copy = {"init_from": f"upstream:{dns3}", "init_partial": True}
    teacher = {"teacher": f"upstream:{dns3}", "teacher_weight": 3.0, "feature_weight": 1.0}
    freeze = {"freeze_transferred_steps": 480}
    return {"scratch": {"init_from": scratch}, "copy": copy, "freeze": {**copy, **freeze},
            "distill": {**copy, **teacher}, "freeze-distill": {**copy, **freeze, **teacher}}


def variant_config(overrides: dict, epochs: int) -> dict:
    """The run config of one variant: :data:`BASE` with the variant's train overrides."""
    return {**BASE, "train": {**BASE["train"], **overrides, "epochs": epochs}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", required=True, help="the from-scratch gtcrn-g32 checkpoint to continue")
    ap.add_argument("--dns3", required=True, help="the official DNS3 checkpoint")
    ap.add_argument("--out", type=Path, default=Path("runs/transfer-study"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = ap.parse_args()
    runs = variants(args.scratch, args.dns3)
    names = [n for n in runs if not args.only or n in args.only.split(",")]
    for name in names:
        run_dir = args.out / name
        if (run_dir / "last.pt").exists() and len(_rows(run_dir)) > args.epochs:
            continue  # done
        config = variant_config(runs[name], args.epochs)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([sys.executable, "-m", "gtcrn.cli", "train", "--config", str(path), "--run-dir",
                        str(run_dir)], check=True)
    print("| variant | step | dev PESQ-WB | STOI | SI-SDR dB | speech gain dB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        for row in _rows(args.out / name):
            figures = [float(row[k]) for k in ("dev_pesq_wb", "dev_stoi", "dev_si_sdr", "dev_speech_gain")]
            print(f"| {name} | {row['step']} | {figures[0]:.3f} | {figures[1]:.3f} | {figures[2]:.2f} | "
                  f"{figures[3]:.2f} |")
    return 0


def _rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


if __name__ == "__main__":
    raise SystemExit(main())
