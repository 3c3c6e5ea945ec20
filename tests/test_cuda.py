"""CUDA: inference and training on a GPU (skipped where there is none; CI has none, so run these
on a GPU machine with ``python -m pytest tests/test_cuda.py``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from gtcrn.config import RunConfig
from gtcrn.deploy import to_deploy
from gtcrn.training.trainer import train
from tests.helpers import make_model, randomise_batchnorm
from tests.test_data import write_pool

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_inference_on_cuda_matches_cpu_without_warnings(preset: str) -> None:
    """Offline and streaming inference on the GPU give the CPU's output (float rounding) and
    emit no warning, the plain model and its deploy form."""
    model = randomise_batchnorm(make_model(preset)).eval()
    spec = torch.randn(1, 257, 40, 2, generator=torch.Generator().manual_seed(0))  # (1, 257, T, 2)
    with torch.inference_mode():
        ref = model(spec)  # (1, 257, T, 2)
        gpu = model.cuda()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = gpu(spec.cuda()).cpu()
            state = gpu.init_state(1, device="cuda")
            frames = []
            for t in range(spec.shape[2]):
                frame, state = gpu.step(spec[:, :, t:t + 1].cuda(), state)
                frames.append(frame.cpu())
        deploy = to_deploy(gpu)  # the torch engine's form, on the GPU
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fast, _ = deploy(spec.cuda())
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 1e-4 * scale
    assert (torch.cat(frames, dim=2) - ref).abs().max() <= 1e-4 * scale
    assert (fast.cpu() - ref).abs().max() <= 1e-4 * scale


def test_training_on_cuda_with_amp_stops_and_resumes_exactly(tmp_path: Path) -> None:
    """The tiny config on the GPU (bf16/fp16 autocast): an interrupted run resumed from its
    checkpoint ends with the uninterrupted run's weights, and the checkpoint loads on the CPU."""
    data = yaml.safe_load(TINY.read_text())
    data["data"]["manifest"] = str(write_pool(tmp_path / "pool"))
    data["train"]["device"] = "cuda"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    cfg = RunConfig.load(cfg_path)
    assert cfg.train.amp == "auto"
    ref = train(cfg, tmp_path / "ref")
    stopped = train(cfg, tmp_path / "run", on_step=lambda info: info.step == 5)
    assert stopped.interrupted and stopped.step == 5
    done = train(cfg, tmp_path / "run", resume=True)
    assert done.step == ref.step and not done.interrupted
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True, map_location="cpu")["state_dict"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=True, map_location="cpu")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.device.type == "cpu" for v in a.values())
