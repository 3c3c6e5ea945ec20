"""gtcrn.benchmark: which models it times (the timings themselves are not unit-tested)."""

from __future__ import annotations

import torch

import gtcrn
from gtcrn.benchmark import _model


def test_models_are_named_by_the_same_specs_as_everywhere(tmp_path):
    shipped, weights = _model("gtcrn-g32")
    assert weights == "shipped"
    assert all(torch.equal(v, gtcrn.load_model("gtcrn-g32").state_dict()[k])
               for k, v in shipped.state_dict().items())
    model, weights = _model("untrained:gtcrn-official")
    assert weights == "random init" and model.config.encoder == "official"
    path = gtcrn.save_checkpoint(model, tmp_path / "m.pt")
    again, weights = _model(str(path))
    assert weights == "checkpoint"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_the_sherpa_onnx_rows_compare_with_the_official_model():
    from gtcrn.benchmark import BenchmarkResult, _sherpa_table

    rows = _sherpa_table(BenchmarkResult(sherpa_cpu={"gtcrn-g32": 0.02, "official": 0.05}))
    assert "| gtcrn-g32 (our export) | 0.0200 | 2.50x less CPU |" in rows
    assert "| official gtcrn.onnx + sherpa-onnx metadata | 0.0500 | 1x |" in rows
    alone = _sherpa_table(BenchmarkResult(sherpa_cpu={"gtcrn-g32": 0.02}))  # no official model to compare
    assert "| gtcrn-g32 (our export) | 0.0200 |  |" in alone
