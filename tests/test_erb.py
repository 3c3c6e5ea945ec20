import numpy as np
import pytest
import torch

from gtcrn.erb import ERB, erb_filters, erb_to_hz, hz_to_erb


@pytest.mark.parametrize("low,bands", [(65, 64), (64, 64), (32, 48)])
def test_every_upper_bin_weights_sum_to_one(low, bands):
    w = erb_filters(low, bands).numpy()  # (bands, 257 - low)
    assert w.shape == (bands, 257 - low)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-5)
    assert (w >= 0).all()


def test_erb_scale_round_trip_and_known_value():
    f = np.array([0.0, 100.0, 1000.0, 8000.0])
    np.testing.assert_allclose(erb_to_hz(hz_to_erb(f)), f, atol=1e-9)
    # Glasberg & Moore ERB-rate at 1 kHz is about 15.6 Cams.
    assert abs(hz_to_erb(1000.0) - 15.59) < 0.05


def test_bands_are_ordered_and_widen_with_frequency():
    w = erb_filters(64, 64).numpy()
    centres = (w * np.arange(w.shape[1])).sum(1) / w.sum(1)
    assert np.all(np.diff(centres) > 0)
    widths = (w > 0).sum(1)
    assert widths[-5:].mean() > widths[:5].mean()


def test_bm_keeps_low_bins_and_bs_passes_band_constant_masks():
    erb = ERB(64, 64)
    x = torch.randn(2, 3, 5, 257)
    y = erb.bm(x)
    assert y.shape == (2, 3, 5, 128)
    torch.testing.assert_close(y[..., :64], x[..., :64])
    # A mask constant over the bands becomes the same constant on every bin (partition of unity).
    m = torch.full((1, 2, 1, 128), 0.37)
    m[..., :64] = torch.randn(64)
    out = erb.bs(m)
    assert out.shape == (1, 2, 1, 257)
    torch.testing.assert_close(out[..., 64:], torch.full_like(out[..., 64:], 0.37), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., :64], m[..., :64])


def test_bs_of_bm_is_the_symmetric_smoothing_wt_w():
    erb = ERB(64, 64)
    x = torch.randn(4, 257, dtype=torch.float64)
    w = erb_filters(64, 64).double().numpy()  # (64, 193)
    expected = x.numpy().copy()
    expected[:, 64:] = x.numpy()[:, 64:] @ (w.T @ w)  # independent numpy computation of W^T W x
    got = erb.double().bs(erb.bm(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_impulse_spreads_only_over_its_bands():
    erb = ERB(64, 64)
    x = torch.zeros(257)
    x[200] = 1.0
    y = erb.bs(erb.bm(x))
    w = erb_filters(64, 64)
    bands = torch.nonzero(w[:, 200 - 64]).flatten()
    allowed = set((torch.nonzero(w[bands].sum(0)).flatten() + 64).tolist())
    assert set(torch.nonzero(y).flatten().tolist()) <= allowed
    assert y[200] > 0


def test_matrices_are_fixed():
    erb = ERB(65, 64)
    assert not erb.erb_fc.weight.requires_grad and not erb.ierb_fc.weight.requires_grad
    torch.testing.assert_close(erb.ierb_fc.weight, erb.erb_fc.weight.T)
