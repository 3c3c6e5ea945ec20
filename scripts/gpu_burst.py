"""A training burst on a lent GPU machine, prepared here so that it runs at once.

The device machine has PyTorch but not this package's audio dependencies, cannot download,
and receives at most 64 MiB with the working tree. ``pack`` therefore builds ``burst/``
(gitignored) from the local pool:

* ``pool/``: a stratified subset of the training speech and noise (each source keeps its share
  of the hours), Opus-coded at 16 kHz (about 33 kbit/s), with ``manifest.jsonl``; the measured
  room responses go as FLAC;
* ``dev/``: a few pairs of each part of the real-use dev set (``scripts/build_dev_set.py``), FLAC;
* ``wheels/``: soundfile, soxr, pystoi and cffi for the device's Python (3.12, manylinux);
* ``init.pt`` (the weights to continue), ``teacher.tar`` (when the base config distils);
* ``config.yaml``: the base config's overrides, pointed at the above, batch 64, on CUDA;
* ``run.sh``: installs the wheels offline and trains until ``--minutes``, then SIGTERM makes the
  trainer save ``last.pt``; the run folder comes back under ``$OUT/run``.

Then, with the device tool: ``run(command="bash burst/run.sh", carry=["burst"], timeout_s=590)``,
and evaluate what comes back on the whole dev set here (``scripts/evaluate_dev_set.py``): the
device has no PESQ, so its own checkpoint choice is by SI-SDR.

    python scripts/gpu_burst.py pack --init checkpoints/NAME.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
BUDGET_MIB = 56  # what burst/ may take of the 64 MiB that travel, beside the tracked tree
OPUS_LEVEL = 0.9  # soundfile's compression_level for Opus: about 33 kbit/s at 16 kHz
WHEELS = ("soundfile", "soxr", "pystoi", "cffi", "pycparser")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")

RUN_SH = """#!/usr/bin/env bash
# Runs on the device machine, from the repository root. Written by scripts/gpu_burst.py.
set -uo pipefail
python3 -m pip install -q --no-index --find-links burst/wheels {wheels} 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH="$PWD" OMP_NUM_THREADS=1
timeout -s TERM {seconds} python3 -m gtcrn.cli train --config burst/config.yaml \\
    --run-dir "$OUT/run" --device cuda
status=$?
echo "train exited with $status (143 = stopped by the time limit, last.pt saved)"
tail -5 "$OUT/run/train.log"
"""


def stratified(rows: list[dict], hours: float, rng: np.random.Generator) -> list[dict]:
    """Whole files, each source keeping its share of ``hours`` (in its own random order)."""
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(str(r.get("source")), []).append(r)
    total = sum(float(r["duration"]) for r in rows)
    chosen: list[dict] = []
    for source in sorted(by_source):
        group = by_source[source]
        quota = hours * 3600 * sum(float(r["duration"]) for r in group) / total
        taken = 0.0
        for i in rng.permutation(len(group)):
            if taken >= quota:
                break
            chosen.append(group[i])
            taken += float(group[i]["duration"])
    return chosen


def encode(src: Path, dst: Path, opus: bool) -> int:
    """``src`` as 16 kHz mono at ``dst`` (Opus or FLAC); returns the bytes written."""
    import soxr

    audio, rate = sf.read(src, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)  # (N,)
    if rate != SR:
        audio = soxr.resample(audio, rate, SR)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if opus:
        sf.write(dst, audio, SR, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    else:
        sf.write(dst, audio, SR, format="FLAC")
    return dst.stat().st_size


def pack(args: argparse.Namespace) -> int:
    out = ROOT / "burst"
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(args.seed)
    manifest = Path(args.manifest)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train" and float(r.get("weight", 1.0) or 0) > 0]
    speech = stratified([r for r in train if r["kind"] == "speech"], args.speech_hours, rng)
    noise = stratified([r for r in train if r["kind"] == "noise"], args.noise_hours, rng)
    rirs = [r for r in train if r["kind"] == "rir"]
    written, out_rows = 0, []
    for k, r in enumerate(speech + noise + rirs):
        opus = r["kind"] != "rir"
        rel = Path("pool") / r["kind"] / f"{k:05d}{'.opus' if opus else '.flac'}"
        written += encode(manifest.parent / r["path"], out / rel, opus)
        out_rows.append({**r, "path": str(rel.relative_to("pool"))})
    (out / "pool" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    devset = Path(args.devset)
    items = json.loads((devset / "devset.json").read_text())["items"]
    parts: dict[str, list[str]] = {}
    for item in items:  # item["file"] = PART/NAME.wav under noisy/ and clean/
        parts.setdefault(str(Path(item["file"]).parent), []).append(item["file"])
    for _part, group in sorted(parts.items()):
        for i in rng.choice(len(group), size=min(args.dev_per_part, len(group)), replace=False):
            for side in ("noisy", "clean"):
                src = devset / side / group[i]
                dst = out / "dev" / side / Path(group[i]).with_suffix(".flac")
                dst.parent.mkdir(parents=True, exist_ok=True)
                audio, rate = sf.read(src, dtype="float32")
                sf.write(dst, audio, rate, format="FLAC")
                written += dst.stat().st_size
    base = yaml.safe_load(Path(args.config).read_text())
    base.setdefault("data", {}).update(
        {
            "manifest": "burst/pool/manifest.jsonl",
            "dev_paired_dir": "burst/dev",
            "dev_count": 4 * args.dev_per_part,
            "num_workers": args.workers,
            "cache": "memory",
        }
    )
    train_cfg = base.setdefault("train", {})
    shutil.copy(args.init, out / "init.pt")
    train_cfg.update(
        {
            "init_from": "burst/init.pt",
            "batch_size": args.batch,
            "lr": args.lr,
            "max_steps": args.steps,
            "examples_per_epoch": args.batch * args.steps_per_epoch,
            "epochs": 10_000,
            "warmup_steps": 100,
            "device": "cuda",
            "num_threads": 1,
            "dev_metrics": ["stoi", "si_sdr", "speech_gain"],
            "best_metric": "si_sdr",
            "progress": False,
            "log_every": 100,
            "tensorboard": False,
        }
    )
    teacher = train_cfg.get("teacher")
    if teacher:
        source = Path(str(teacher).removeprefix("upstream:"))
        source = source if source.is_absolute() else ROOT / source
        shutil.copy(source, out / "teacher.tar")
        train_cfg["teacher"] = "upstream:burst/teacher.tar"
    (out / "config.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    wheels = out / "wheels"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary",
        ":all:",
        "--no-deps",
        "--python-version",
        "3.12",
        "-d",
        str(wheels),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + list(WHEELS), check=True)
    seconds = int(args.minutes * 60)
    (out / "run.sh").write_text(RUN_SH.format(wheels=" ".join(WHEELS), seconds=seconds))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"burst/: {len(speech)} speech files ({args.speech_hours} h), {len(noise)} noise files "
        f"({args.noise_hours} h), {len(rirs)} room responses, {4 * args.dev_per_part} dev pairs; "
        f"{size / 2**20:.1f} MiB of {BUDGET_MIB}"
    )
    if size > BUDGET_MIB * 2**20:
        print(f"burst/ is over {BUDGET_MIB} MiB: lower --speech-hours or --noise-hours", file=sys.stderr)
        return 1
    print('then: run(command="bash burst/run.sh", carry=["burst"], timeout_s=590)')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="build burst/ from the local pool")
    p.add_argument("--init", required=True, help="checkpoint to continue from")
    p.add_argument(
        "--config",
        default=str(ROOT / "configs/gtcrn-g32-dns3-level.yaml"),
        help="base run config whose recipe the burst keeps",
    )
    p.add_argument("--manifest", default=str(ROOT / "data/pool/manifest.jsonl"))
    p.add_argument("--devset", default=str(ROOT / "data/devset"))
    p.add_argument("--speech-hours", type=float, default=2.0)
    p.add_argument("--noise-hours", type=float, default=1.3)
    p.add_argument("--dev-per-part", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--steps", type=int, default=6000, help="cosine schedule length (the clock may stop it)")
    p.add_argument(
        "--steps-per-epoch", type=int, default=500, help="dev evaluation and best.pt every N steps"
    )
    p.add_argument("--workers", type=int, default=14)
    p.add_argument("--minutes", type=float, default=8.5, help="training time on the device")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return pack(args)


if __name__ == "__main__":
    sys.exit(main())
