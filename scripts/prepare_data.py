#!/usr/bin/env python3
"""Build the train/dev pool of real recordings: a thin wrapper around gtcrn.training.prepare.prepare_pool.

Example: python scripts/prepare_data.py --out data/pool
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtcrn.training.prepare import PrepareError, prepare_pool  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("data/pool"), help="pool folder (default: data/pool)"
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=None,
        help="shared folder holding data/ (default: ../shared from the working directory)",
    )
    parser.add_argument("--no-shared", action="store_true", help="build from the Debian packages alone")
    parser.add_argument("--no-debian", action="store_true", help="skip the Debian speech/noise packages")
    parser.add_argument(
        "--cache", type=Path, default=None, help="download/extract cache (default: OUT/.cache)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the splits and synthetic noise (default: 0)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    args = parser.parse_args(argv)
    try:
        manifest = prepare_pool(
            args.out,
            shared_dir=args.shared,
            use_shared=not args.no_shared,
            debian_packages=not args.no_debian,
            cache_dir=args.cache,
            seed=args.seed,
            progress=not args.quiet,
        )
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
