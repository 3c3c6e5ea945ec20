"""The sherpa-onnx export (gtcrn.export): the cache layout, the file and its metadata, and the real
runtime: sherpa_onnx's OfflineSpeechDenoiser and OnlineSpeechDenoiser against this package's own
output (gtcrn.enhance, gtcrn.Streamer), and the official DNS3 weights against the official outputs.

How sherpa-onnx frames the signal (read from its sources, confirmed here):
* OfflineSpeechDenoiser: torch.stft's framing (512, 256, sqrt-Hann, centre, reflect padding) and
  torch.istft without ``length``: (N // 256) * 256 samples, the last partial hop left out.
* OnlineSpeechDenoiser: the same frames, but the signal is extended by zeros at both ends (torch and
  our Streamer reflect it), then trimmed to N samples. Where the first and last 257+ samples are
  silent, both extensions are zeros and the outputs coincide; elsewhere the first frame differs,
  and through the model's state every frame after it a little.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gtcrn
from gtcrn.cli import main
from gtcrn.config import PRESETS
from gtcrn.stft import HOP, N_FFT
from tests.helpers import make_model
from tests.test_stream import speech_like

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gtcrn.export import (  # noqa: E402
    ExportError,
    cache_layout,
    export_sherpa_onnx,
    join_caches,
    sherpa_denoiser,
    split_caches,
    verify_sherpa_onnx,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Float32 rounding only: sherpa-onnx's FFT and DFT against torch's, onnxruntime's kernels against
# torch's, over a few hundred frames; measured at most 1.1e-6.
TOL = 1e-5
# As tests/test_upstream.py holds the torch model to the official reference outputs.
REFERENCE_TOL = 1e-4
# The sherpa-onnx command-line tools write 16-bit PCM (x 32767, truncated): two 16-bit steps.
PCM16_TOL = 2 / 32768
CHUNKS = (1, 37, 256, 1600)  # OnlineSpeechDenoiser chunk sizes, samples
SILENCE = 1600  # 0.1 s of silence before and after the online test signal (see the docstring)
OFFICIAL_SHAPES = {"conv_cache": [2, 1, 16, 16, 33], "tra_cache": [2, 3, 1, 1, 16],
                   "inter_cache": [2, 1, 33, 16]}  # the inputs of the official gtcrn.onnx


def signal(silence: int = 0) -> np.ndarray:
    """3 s of speech-like noise (not a whole number of hops), with ``silence`` zeros at each end."""
    x = speech_like(3 * 16000 + 123, seed=1)
    return np.pad(x, silence)  # (n + 2 silence,)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sherpa")
    return {name: export_sherpa_onnx(name, out / f"{name}.onnx") for name in PRESETS}


@pytest.fixture(scope="module")
def models() -> dict[str, gtcrn.GTCRN]:
    return {name: gtcrn.load_model(name) for name in PRESETS}


# ---- the layout of the three caches ----------------------------------------------------------

@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_state_tensor_has_one_place_in_the_three_caches(preset):
    model = make_model(preset)
    layout = cache_layout(model)
    state = model.init_state(1)
    shapes = layout.cache_shapes()
    width = 33 if preset == "gtcrn-official" else 32
    assert shapes == {**OFFICIAL_SHAPES, "conv_cache": [2, 1, 16, 16, width],
                      "inter_cache": [2, 1, width, 16]}
    placed = [n for row in layout.conv + layout.tra for n in row] + list(layout.inter)
    assert sorted(placed) == sorted(state)
    assert sum(int(np.prod(s)) for s in shapes.values()) == sum(t.numel() for t in state.values())
    # the decoder's blocks sit in their mirror encoder block's slot, as in the official model
    assert [state[n].shape for n in layout.conv[0]] == [state[n].shape for n in layout.conv[1]]


def test_the_shapes_follow_the_config():
    model = make_model("gtcrn-g32", dilations=[1, 2, 4, 8], num_dpgrnn=3)
    assert cache_layout(model).cache_shapes() == {"conv_cache": [2, 1, 16, 30, 32],
                                                  "tra_cache": [2, 4, 1, 1, 16],
                                                  "inter_cache": [3, 1, 32, 16]}


def test_caches_split_and_join_without_loss():
    model = make_model("gtcrn-g32")
    layout = cache_layout(model)
    state = {k: torch.randn_like(v) for k, v in model.init_state(1).items()}
    again = split_caches(join_caches(state, layout), layout)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def test_a_state_outside_the_three_caches_is_refused(monkeypatch):
    model = make_model("gtcrn-g32")
    init = model.init_state

    def with_conv_block_cache(batch: int = 1, device=None, dtype=torch.float32):
        return {**init(batch, device, dtype), "encoder.en_convs.0.cache": torch.zeros(batch, 16, 4, 64)}

    monkeypatch.setattr(model, "init_state", with_conv_block_cache)
    with pytest.raises(ExportError, match=r"encoder\.en_convs\.0\.cache .*no place"):
        cache_layout(model)


# ---- the file ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_file_has_sherpa_onnx_interface_and_metadata(exports, models, preset):
    sess = ort.InferenceSession(str(exports[preset]), providers=["CPUExecutionProvider"])
    shapes = cache_layout(models[preset]).cache_shapes()
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("mix", [1, 257, 1, 2]),
                                                             *((k, v) for k, v in shapes.items())]
    assert [o.name for o in sess.get_outputs()] == ["enh", "conv_cache_out", "tra_cache_out",
                                                    "inter_cache_out"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert {k: meta[k] for k in ("model_type", "version", "sample_rate", "n_fft", "hop_length",
                                 "window_length", "window_type")} == {
        "model_type": "gtcrn", "version": "1", "sample_rate": "16000", "n_fft": "512",
        "hop_length": "256", "window_length": "512", "window_type": "hann_sqrt"}
    assert {k: [int(d) for d in meta[f"{k}_shape"].split(",")] for k in shapes} == shapes
    assert meta["gtcrn.model"] == preset and meta["gtcrn.preset"] == preset
    record = json.loads(meta["gtcrn.record"])
    assert record["steps_total"] > 0 and record["hours_of_audio_seen"] > 0
    assert set(record["dev_best"]) >= {"pesq_wb", "stoi", "si_sdr"}
    assert meta["gtcrn.licence"] == "MIT" and "Rong et al." in meta["gtcrn.credit"]  # warm start
    assert verify_sherpa_onnx(models[preset], exports[preset]) <= 1e-4


def test_a_failing_check_leaves_no_file(tmp_path, monkeypatch):
    import gtcrn.export as export

    monkeypatch.setattr(export, "verify_sherpa_onnx", lambda *a, **k: 1.0)
    with pytest.raises(ExportError, match="differs from the torch model"):
        export_sherpa_onnx(make_model("gtcrn-g32"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_command_line(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--format", "sherpa-onnx", "--model", "untrained:gtcrn-official",
                 "-o", str(out)]) == 0
    assert "sherpa-onnx model exported" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["conv_cache_shape"] == "2,1,16,16,33" and meta["gtcrn.model"] == "untrained:gtcrn-official"
    assert main(["export", "--format", "sherpa-onnx", "--chunk", "-o", str(tmp_path / "c.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gtcrn export: error: --chunk")


# ---- the real runtime ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sherpa():
    return pytest.importorskip("sherpa_onnx")


def run_online(path: Path, x: np.ndarray, chunk: int) -> np.ndarray:
    """sherpa-onnx's OnlineSpeechDenoiser fed ``x`` in chunks of ``chunk`` samples, then flushed."""
    denoiser = sherpa_denoiser(path, online=True)
    pieces = [np.asarray(denoiser(x[i:i + chunk], 16000).samples) for i in range(0, len(x), chunk)]
    return np.concatenate([*pieces, np.asarray(denoiser.flush().samples)])  # (n,)


def streamed(model: gtcrn.GTCRN, x: np.ndarray) -> np.ndarray:
    """This package's streaming output: a Streamer fed 256-sample hops, then flushed."""
    streamer = gtcrn.Streamer(model)
    pieces = [streamer.feed(x[i:i + HOP]) for i in range(0, len(x), HOP)]
    return np.concatenate([*pieces, streamer.flush()])  # (n,)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_offline_denoiser_equals_gtcrn_enhance(sherpa, exports, models, preset):
    x = signal()
    got = np.asarray(sherpa_denoiser(exports[preset])(x, 16000).samples)
    want = gtcrn.enhance(x, 16000, models[preset])
    assert len(got) == len(x) // HOP * HOP  # torch.istft without `length`: the last partial hop is left out
    assert np.abs(got - want[:len(got)]).max() <= TOL


@pytest.fixture(scope="module")
def online_reference(models) -> dict[str, np.ndarray]:
    return {name: streamed(model, signal(SILENCE)) for name, model in models.items()}


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_online_denoiser_equals_the_streamer(sherpa, exports, online_reference, preset, chunk):
    x = signal(SILENCE)  # silent edges: zero and reflect extension agree (see the docstring)
    got = run_online(exports[preset], x, chunk)
    assert len(got) == len(x)  # sample-aligned: output sample i is enhanced input sample i
    assert np.abs(got - online_reference[preset]).max() <= TOL


def zero_extended(model: gtcrn.GTCRN, x: np.ndarray) -> np.ndarray:
    """The model on sherpa-onnx's online framing: x extended by zeros (256 before, up to a whole hop
    plus one after), sqrt-Hann frames, overlap-add (the windows' squares sum to one), trimmed to n."""
    n = len(x)
    frames = -(-n // HOP) + 1
    xp = np.concatenate([np.zeros(HOP), x, np.zeros(HOP * frames - n)])  # (256 (frames + 1),)
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))  # periodic sqrt-Hann
    spec = np.stack([np.fft.rfft(xp[t * HOP:t * HOP + N_FFT] * win) for t in range(frames)], axis=1)
    spec_t = torch.from_numpy(np.stack([spec.real, spec.imag], -1)[None].astype(np.float32))  # (1, 257, T, 2)
    with torch.inference_mode():
        out = model(spec_t)[0].double().numpy()  # (257, T, 2)
    y = np.zeros(len(xp))
    for t in range(frames):
        y[t * HOP:t * HOP + N_FFT] += np.fft.irfft(out[:, t, 0] + 1j * out[:, t, 1], N_FFT) * win
    return y[HOP:HOP + n]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_online_denoiser_extends_the_signal_by_zeros(sherpa, exports, models, preset):
    x = signal()  # no silent edges
    got = run_online(exports[preset], x, 256)
    assert np.abs(got - zero_extended(models[preset], x)).max() <= TOL
    # ... which is where it parts from the reflecting Streamer: the first hop, then a little everywhere
    assert np.abs(got - streamed(models[preset], x))[:HOP].max() > 100 * TOL


def test_official_dns3_weights_give_the_official_outputs(sherpa, upstream_dir, tmp_path):
    checkpoint = upstream_dir / "model_trained_on_dns3.tar"
    path = export_sherpa_onnx(f"upstream:{checkpoint}", tmp_path / "dns3.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["gtcrn.preset"] == "gtcrn-official" and meta["conv_cache_shape"] == "2,1,16,16,33"
    assert "Rong et al." in meta["gtcrn.credit"] and meta["gtcrn.licence"] == "MIT"
    assert json.loads(meta["gtcrn.record"]) == {"official_checkpoint": "model_trained_on_dns3.tar"}
    ref = np.load(upstream_dir / "reference_io.npz")
    got = np.asarray(sherpa_denoiser(path)(ref["noisy_wave"].astype(np.float32), 16000).samples)
    want = ref["output_wave_dns3"]  # torch.istft without `length`, as sherpa-onnx's offline output
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= REFERENCE_TOL
    online = run_online(path, ref["noisy_wave"].astype(np.float32), 256)
    model = gtcrn.load_upstream(checkpoint)
    assert np.abs(online - zero_extended(model, ref["noisy_wave"])).max() <= TOL


# ---- the README section, as written ------------------------------------------------------

def readme_section() -> str:
    return README.split("## Use in sherpa-onnx apps", 1)[1].split("\n## ", 1)[0]


def test_the_readme_section_runs_as_written(sherpa, tmp_path, monkeypatch, capsys):
    found = re.findall(r"```(bash|python)\n(.*?)```", readme_section(), re.DOTALL)
    python = [block for lang, block in found if lang == "python"]
    lines = [line.split("#")[0].strip() for lang, block in found if lang == "bash"
             for line in block.replace("\\\n", " ").splitlines()]
    exports_ = [shlex.split(line)[1:] for line in lines if line.startswith("gtcrn export")]
    tools = [shlex.split(line) for line in lines if line.startswith("sherpa-onnx-")]
    assert exports_ and tools and len(python) == 1
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "noisy.wav", tmp_path / "examples" / "noisy.wav")
    monkeypatch.chdir(tmp_path)
    for args in exports_:
        assert main(args) == 0, capsys.readouterr().err
    scope: dict = {}
    exec(python[0], scope)  # noqa: S102 - the README's own example
    import soundfile as sf

    noisy, rate = sf.read("examples/noisy.wav", dtype="float32")
    want = gtcrn.enhance(noisy, rate)
    clean = np.asarray(scope["clean"].samples)
    assert len(clean) == len(noisy) // HOP * HOP and np.abs(clean - want[:len(clean)]).max() <= TOL
    # on PATH, or beside this Python (a virtual environment that is not activated)
    found = [shutil.which(t[0]) or shutil.which(t[0], path=str(Path(sys.executable).parent)) for t in tools]
    if None in found:
        pytest.skip("sherpa-onnx's command-line tools are not installed (pip install sherpa-onnx-bin)")
    for tool, exe in zip(tools, found, strict=True):
        run = subprocess.run([exe, *tool[1:]], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
    out = next(a.split("=", 1)[1] for a in tools[0] if a.startswith("--output-wav="))
    written, _ = sf.read(out, dtype="float32")
    assert np.abs(written - want[:len(written)]).max() <= PCM16_TOL
