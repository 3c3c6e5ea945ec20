"""Write a run config's fixed dev set as files, for `gtcrn evaluate --noisy DIR/noisy --clean DIR/clean`.

The trainer validates on exactly these mixtures (seeded once from the config), so the figures that
`gtcrn evaluate` prints on this folder are comparable with the trainer's metrics.csv.

Usage: python scripts/export_dev_set.py --config configs/gtcrn-g32-cpu.yaml --out data/dev-g32
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gtcrn.audio import write_audio
from gtcrn.config import RunConfig
from gtcrn.stft import SAMPLE_RATE
from gtcrn.training.data import build_run_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cfg = RunConfig.load(args.config)
    data = build_run_data(cfg.data, cfg.train.seed)
    out = Path(args.out)
    for sub in ("noisy", "clean"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, (noisy, clean) in enumerate(data.dev):
        name = f"dev_{i:04d}.wav"
        write_audio(out / "noisy" / name, noisy, SAMPLE_RATE, "FLOAT")
        write_audio(out / "clean" / name, clean, SAMPLE_RATE, "FLOAT")
    print(f"wrote {len(data.dev)} pairs to {out}/noisy and {out}/clean")


if __name__ == "__main__":
    main()
