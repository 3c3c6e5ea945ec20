import numpy as np
import pytest
import torch

import gtcrn
from gtcrn.checkpoint import CheckpointError
from gtcrn.erb import erb_filters
from gtcrn.stft import istft, stft


@pytest.mark.parametrize("name", ["dns3", "vctk"])
def test_official_outputs_are_reproduced(upstream_dir, name):
    ref = np.load(upstream_dir / "reference_io.npz")
    model = gtcrn.load_upstream(upstream_dir / f"model_trained_on_{name}.tar")
    assert model.config.encoder == "official" and not model.training
    spec = torch.from_numpy(ref["input_spec"]).float()[None]  # (1, 257, T, 2)
    with torch.no_grad():
        out = model(spec)[0].numpy()
    assert np.abs(out - ref[f"output_spec_{name}"]).max() <= 1e-4
    # The reference waveform is torch.istft without `length`: (T - 1) * 256 samples.
    expected = ref[f"output_wave_{name}"]
    wav = istft(torch.from_numpy(out)[None], expected.shape[-1])[0].numpy()
    assert np.abs(wav - expected).max() <= 1e-4


def test_our_stft_matches_the_reference_input(upstream_dir):
    ref = np.load(upstream_dir / "reference_io.npz")
    spec = stft(torch.from_numpy(ref["noisy_wave"]).float()[None])[0].numpy()
    assert np.abs(spec - ref["input_spec"]).max() <= 1e-5


def test_our_erb_matrix_equals_the_official_one(upstream_dir):
    sd = torch.load(upstream_dir / "model_trained_on_dns3.tar", map_location="cpu", weights_only=True)
    torch.testing.assert_close(erb_filters(65, 64), sd["model"]["erb.erb_fc.weight"], atol=1e-6, rtol=0)


def test_enhance_waveform_with_official_weights(upstream_dir):
    ref = np.load(upstream_dir / "reference_io.npz")
    model = gtcrn.load_upstream(upstream_dir / "model_trained_on_dns3.tar")
    with torch.no_grad():
        out = model.enhance_waveform(torch.from_numpy(ref["noisy_wave"]).float()).numpy()
    expected = ref["output_wave_dns3"]  # (T - 1) * 256 samples: istft without `length`
    assert out.shape == ref["noisy_wave"].shape
    assert np.abs(out[: expected.shape[-1]] - expected).max() <= 1e-4


def test_wrong_file(tmp_path):
    torch.save({"model": {"x": torch.zeros(2)}}, tmp_path / "bad.tar")
    with pytest.raises(CheckpointError, match="official GTCRN topology"):
        gtcrn.load_upstream(tmp_path / "bad.tar")
    (tmp_path / "junk.tar").write_bytes(b"\x00\x01junk")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        gtcrn.load_upstream(tmp_path / "junk.tar")
