"""gtcrn.kernels: the CPU training forms compute the plain model's function and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gtcrn import kernels
from gtcrn.nn import GTCRN
from tests.helpers import make_model


def _run(model: nn.Module, spec: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, dict]:
    out, new = model.forward_stateful(spec, state)
    loss = out.square().sum() + sum(s.square().sum() for s in new.values())
    loss.backward()
    return out, new, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("preset,overrides", [("gtcrn-g32", {}), ("gtcrn-official", {}),
                                              ("gtcrn-g32", {"stem_groups": 4, "head_groups": 8})])
@pytest.mark.parametrize("train", [True, False])
def test_kernels_compute_the_plain_function_and_gradients(preset: str, overrides: dict, train: bool) -> None:
    """float64, batch 2, a random state in: outputs, new state and every parameter gradient agree."""
    plain = make_model(preset, **overrides).double().train(train)
    fast = kernels.use_cpu_kernels(copy.deepcopy(plain))
    spec = torch.randn(2, 257, 23, 2, dtype=torch.float64)
    state = {k: 0.5 * torch.randn_like(v) for k, v in plain.init_state(2, dtype=torch.float64).items()}
    ref, got = _run(plain, spec, state), _run(fast, spec, state)
    torch.testing.assert_close(got[0], ref[0], atol=1e-9, rtol=1e-9)
    for key in ref[1]:
        torch.testing.assert_close(got[1][key], ref[1][key], atol=1e-9, rtol=1e-9)
    assert ref[2].keys() == got[2].keys() and len(ref[2]) == sum(p.requires_grad for p in plain.parameters())
    scale = max(g.abs().max() for g in ref[2].values())
    for key in ref[2]:  # conv biases before training-mode BatchNorm have a zero gradient: compare to scale
        torch.testing.assert_close(got[2][key], ref[2][key], atol=1e-9 * scale, rtol=1e-7, msg=key)


def test_kernels_keep_parameters_keys_and_class() -> None:
    model = GTCRN()
    params = {k: id(p) for k, p in model.named_parameters()}
    keys = list(model.state_dict())
    assert kernels.use_cpu_kernels(model) is model and isinstance(model, GTCRN)
    assert {k: id(p) for k, p in model.named_parameters()} == params and list(model.state_dict()) == keys
    kinds = {type(m) for m in model.modules()}
    assert {kernels.FastDPGRNN, kernels.ScanGRU, kernels.FastPReLU,
            kernels.FastDepthwiseConv, kernels.FastDepthwiseConvT, kernels.PolyphaseConvT,
            kernels.MatmulBandStem, kernels.FastPointwise, kernels.FastPointwiseT} <= kinds


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_scan_is_nn_gru(reverse: bool) -> None:
    gru = nn.GRU(5, 7, batch_first=True, bidirectional=reverse).double()
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 if reverse else 1, 3, 7, dtype=torch.float64)
    ref = gru(x, h0)[0][..., 7:] if reverse else gru(x, h0)[0]  # (B, L, H) of that direction
    w = [getattr(gru, n + ("_l0_reverse" if reverse else "_l0"))
         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    got = kernels.gru_scan(x.permute(2, 1, 0), h0[-1].t(), *w, reverse=reverse).permute(2, 1, 0)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(ref)
    grads = [torch.autograd.grad((y * g).sum(), [x, *w]) for y in (ref, got)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)
