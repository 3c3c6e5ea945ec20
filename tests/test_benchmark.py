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
