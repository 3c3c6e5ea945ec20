"""Shared fixtures. Tests that need ../shared skip cleanly when it is absent (a user's fresh clone)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UPSTREAM = SHARED / "upstream-gtcrn"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    if not (UPSTREAM / "reference_io.npz").is_file():
        pytest.skip("../shared/upstream-gtcrn is not present")
    return UPSTREAM


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                      "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")


@pytest.fixture(autouse=True)
def _not_under_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """gtcrn enhance/evaluate take their shard from these: a suite started by torchrun or in a
    SLURM array must not shard the tests' own runs."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
