"""gtcrn.nn: the plain blocks, their state named by the owning block, streaming == offline."""

from __future__ import annotations

import pytest
import torch

from gtcrn.config import ModelConfig
from gtcrn.nn import DPGRNN, GRNN, GTCRN, TRA, ConvBlock, GTConvBlock, prefixed, substate
from tests.helpers import make_model, randomise_batchnorm


def test_state_is_named_by_the_module_that_owns_it() -> None:
    model = make_model("gtcrn-g32")
    state = model.init_state(2)
    modules = dict(model.named_modules())
    for key, value in state.items():
        owner = modules[key.rsplit(".", 1)[0]]  # "encoder.en_convs.2.tra.h" -> the TRA
        assert isinstance(owner, (GTConvBlock, TRA, GRNN)), key
        assert value.shape[0 if isinstance(owner, GTConvBlock) else 1] in (2, 2 * model.encoder.width)
    assert list(state) == list(model.forward_stateful(torch.randn(2, 257, 3, 2), None)[1])
    assert "encoder.en_convs.2.cache" in state and "dpgrnn.1.inter_rnn.h" in state
    assert "decoder.de_convs.2.tra.h" in state


def test_substate_and_prefixed_are_inverse() -> None:
    state = {"a.x": torch.zeros(1), "a.b.y": torch.ones(1), "c.z": torch.zeros(2)}
    assert list(substate(state, "a")) == ["x", "b.y"]
    assert prefixed("a", substate(state, "a")) == {k: v for k, v in state.items() if k.startswith("a.")}
    assert substate(None, "a") is None and substate(state, "missing") == {}


BLOCKS = {
    "gtconv": (lambda: GTConvBlock(16, 16, (3, 3), 2), (2, 16, 11, 33)),
    "gtconv-deconv": (lambda: GTConvBlock(16, 16, (3, 3), 5, use_deconv=True), (2, 16, 13, 33)),
    "tra": (lambda: TRA(8), (2, 8, 9, 33)),
    "dpgrnn": (lambda: DPGRNN(16, 33), (2, 16, 10, 33)),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_each_stateful_block_streams_like_offline(name: str) -> None:
    """Frames in chunks (1 frame, then several) with the state carried give the offline output."""
    make, shape = BLOCKS[name]
    block = randomise_batchnorm(make()).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        whole, final = block(x)
        parts, state = [], None
        for a, b in ((0, 1), (1, 4), (4, shape[2])):
            y, state = block(x[:, :, a:b], state)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=1e-5)
    assert list(state) == list(final)
    for key in state:
        torch.testing.assert_close(state[key], final[key], atol=1e-5, rtol=1e-5)


def test_conv_block_width_arithmetic() -> None:
    """out_width is what the layer really produces: the stacks track widths with it."""
    for block in (ConvBlock(4, 4, (1, 5), (1, 2), (0, 2)),
                  ConvBlock(4, 4, (1, 5), (1, 2), (0, 2), use_deconv=True, output_padding=(0, 1)),
                  ConvBlock(4, 4, (1, 5), (1, 2), (0, 2), use_deconv=True)):
        for width in (32, 33, 64):
            assert block(torch.zeros(1, 4, 2, width))[0].shape[-1] == block.out_width(width)


def test_adding_an_encoder_layer_is_one_change() -> None:
    """A fourth dilation adds a GTConvBlock to each stack; state, streaming and widths follow."""
    cfg = ModelConfig.from_dict({**ModelConfig.preset("gtcrn-official").to_dict(), "dilations": [1, 2, 5, 9]})
    model = randomise_batchnorm(GTCRN(cfg)).eval()
    state = model.init_state(1)
    assert "encoder.en_convs.5.cache" in state and "decoder.de_convs.3.tra.h" in state
    spec = torch.randn(1, 257, 12, 2)
    with torch.no_grad():
        whole = model(spec)
        a, s = model.forward_stateful(spec[:, :, :5], None)
        b, _ = model.forward_stateful(spec[:, :, 5:], s)
    torch.testing.assert_close(torch.cat([a, b], dim=2), whole, atol=1e-5, rtol=1e-5)

