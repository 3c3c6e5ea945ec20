import re

import pytest
import torch

import gtcrn
from gtcrn.nn import BandStem
from gtcrn.stft import stft
from tests.helpers import make_model

PRESETS = ["gtcrn-g32", "gtcrn-official"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("frames", [1, 2, 7, 63])
def test_output_shape_matches_input(preset, frames):
    model = make_model(preset)
    spec = torch.randn(2, 257, frames, 2)
    with torch.no_grad():
        out = model(spec)
    assert out.shape == spec.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("preset,width", [("gtcrn-g32", 32), ("gtcrn-official", 33)])
def test_encode_and_standalone_encoder(preset, width):
    model = make_model(preset)
    spec = torch.randn(1, 257, 10, 2)
    with torch.no_grad():
        feats = model.encode(spec)
        enc = gtcrn.Encoder(model.config)
        enc.load_state_dict(model.encoder.state_dict())
        alone, skips, state = enc.eval()(spec)
    assert feats.shape == (1, 16, 10, width)
    torch.testing.assert_close(alone, feats)
    assert skips[-1] is alone  # the decoder's first skip is the encoder output


@pytest.mark.parametrize("preset", PRESETS)
def test_enhance_waveform_keeps_length(preset):
    model = make_model(preset)
    for n in (300, 16000, 16001):
        with torch.no_grad():
            assert model.enhance_waveform(torch.randn(2, n)).shape == (2, n)
            assert model.enhance_waveform(torch.randn(n)).shape == (n,)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_learnable_parameter_gets_a_gradient(preset):
    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset(preset)).train()
    out = model(torch.randn(2, 257, 12, 2))
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name  # the fixed ERB matrices


@pytest.mark.parametrize("preset", PRESETS)
def test_causality_on_the_waveform(preset):
    """Changing the input after sample n leaves the output before n - 512 unchanged."""
    model = make_model(preset).double()
    n_total, n = 16000, 9000
    x = 0.1 * torch.randn(1, n_total, dtype=torch.float64)
    y = x.clone()
    y[:, n:] = 0.3 * torch.randn(1, n_total - n, dtype=torch.float64)
    with torch.no_grad():
        ox, oy = model.enhance_waveform(x), model.enhance_waveform(y)
    assert (ox[:, : n - 512] - oy[:, : n - 512]).abs().max() <= 1e-6
    assert (ox[:, n:] - oy[:, n:]).abs().max() > 1e-3  # the change is visible afterwards


@pytest.mark.parametrize("preset", PRESETS)
def test_causality_per_frame(preset):
    model = make_model(preset)
    spec = torch.randn(1, 257, 30, 2)
    changed = spec.clone()
    changed[:, :, 20:] = torch.randn(1, 257, 10, 2)
    with torch.no_grad():
        a, b = model(spec), model(changed)
    torch.testing.assert_close(a[:, :, :20], b[:, :, :20], atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_batch_items_are_independent(preset):
    model = make_model(preset)
    spec = torch.randn(3, 257, 25, 2)
    with torch.no_grad():
        batched = model(spec)
        for i in range(3):
            torch.testing.assert_close(model(spec[i:i + 1]), batched[i:i + 1], atol=1e-5, rtol=1e-4)


def test_g32_stem_band_independence():
    """With G = 32 a change in band b's input changes only band b's stem output."""
    torch.manual_seed(1)
    stem = BandStem(9, 8, bands=32, groups=32).eval()
    x = torch.randn(2, 9, 6, 128)
    for band in (0, 13, 31):
        y = x.clone()
        y[..., band * 4:(band + 1) * 4] += torch.randn(2, 9, 6, 4)
        with torch.no_grad():
            diff = (stem(x) - stem(y)).abs().amax(dim=(0, 1, 2)).reshape(32, 4).amax(-1)  # per band
        assert diff[band] > 1e-3
        assert torch.all(diff[torch.arange(32) != band] == 0)


def test_ungrouped_stem_mixes_bands():
    torch.manual_seed(1)
    stem = BandStem(9, 8, bands=32, groups=1).eval()
    x = torch.randn(1, 9, 4, 128)
    y = x.clone()
    y[..., 0:4] += 1.0
    with torch.no_grad():
        diff = (stem(x) - stem(y)).abs().amax(dim=(0, 1, 2)).reshape(32, 4).amax(-1)
    assert (diff[1:] > 0).sum() > 20


def test_model_stem_groups_isolate_bands_end_to_end_in_the_stem():
    model = make_model("gtcrn-g32")
    feats = {}
    model.encoder.stem.register_forward_hook(lambda m, i, o: feats.__setitem__("stem", o))
    spec = torch.randn(1, 257, 5, 2)
    with torch.no_grad():
        model(spec)
    assert feats["stem"].shape == (1, 8, 5, 128)


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16, 32])
def test_stem_groups_sweep(groups):
    model = make_model("gtcrn-g32", stem_groups=groups)
    with torch.no_grad():
        out = model(torch.randn(1, 257, 4, 2))
    assert out.shape == (1, 257, 4, 2)
    conv = model.encoder.stem.conv
    # DESIGN: Conv2d(32*9, 32*c_s, (1,3), groups=G): weights = 288 * 256 * 3 / G, bias 256.
    assert conv.weight.numel() == 288 * 256 * 3 // groups
    assert conv.bias.numel() == 256


def test_stem_cost_scales_inversely_with_groups():
    from gtcrn.complexity import macs_per_second

    g1 = macs_per_second(make_model("gtcrn-g32", stem_groups=1), breakdown=True)[1]["encoder.stem.conv"]
    g32 = macs_per_second(make_model("gtcrn-g32"), breakdown=True)[1]["encoder.stem.conv"]
    frames = 62.5
    bias = 256 * 4 * frames  # one add per output element
    assert (g1 - bias) == pytest.approx(32 * (g32 - bias), rel=1e-9)


@pytest.mark.parametrize("preset", PRESETS)
def test_state_shapes_are_fixed(preset):
    model = make_model(preset)
    state = model.init_state(2)
    spec = torch.randn(2, 257, 9, 2)
    with torch.no_grad():
        _, new = model.forward_stateful(spec, state)
    assert {k: s.shape for k, s in new.items()} == {k: s.shape for k, s in state.items()}


@pytest.mark.parametrize("preset", PRESETS)
def test_chunked_stateful_equals_offline(preset):
    model = make_model(preset)
    spec = torch.randn(1, 257, 40, 2)
    with torch.no_grad():
        full = model(spec)
        state = model.init_state(1)
        parts = []
        for a, b in [(0, 1), (1, 13), (13, 14), (14, 40)]:
            out, state = model.forward_stateful(spec[:, :, a:b], state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=2), full, atol=1e-5, rtol=1e-4)


def test_stft_istft_round_trip():
    from gtcrn.stft import istft

    x = torch.randn(2, 12345, dtype=torch.float64)
    torch.testing.assert_close(istft(stft(x), 12345), x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape", [(1, 256, 10, 2), (257, 10, 2), (1, 257, 10), (1, 10, 257, 2),
                                   (2, 257, 10, 3)])
@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_a_wrong_spectrum_shape_names_the_expected_one(preset, shape):
    model = gtcrn.GTCRN(gtcrn.ModelConfig.preset(preset))
    for mode in (model.train, model.eval):  # the training path and the fused inference path
        mode()
        with pytest.raises(ValueError, match=r"expected a spectrum of shape \(B, 257, T, 2\).*got " +
                           re.escape(str(shape))):
            with torch.no_grad():
                model(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"\(B, 257, T, 2\)"):
        model.encoder(torch.zeros(shape))
    if shape == (257, 10, 2):
        with pytest.raises(ValueError, match=r"spec\[None\]"):
            model(torch.zeros(shape))
