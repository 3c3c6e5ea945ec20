"""ONNX export (gtcrn.deploy.onnx): the step and chunk graphs against torch, the packed state, the
numpy + onnxruntime example loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gtcrn
from gtcrn.stft import N_FREQS, stft
from tests.helpers import make_model
from tests.test_stream import reference_short, speech_like

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gtcrn.deploy.onnx import (  # noqa: E402
    ExportError,
    export_onnx,
    pack_state,
    state_names,
    unpack_state,
    verify_onnx,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "scripts" / "onnx_stream_example.py"
TOL = 1e-4


def layout_of(sess: ort.InferenceSession) -> tuple[int, list[dict]]:
    """(S, layout) from the graph's metadata, as a deployment reads them (no torch)."""
    meta = sess.get_modelmeta().custom_metadata_map
    return int(meta["gtcrn.state_size"]), json.loads(meta["gtcrn.state_layout"])


def unpack(packed: np.ndarray, layout: list[dict]) -> list[np.ndarray]:
    """The packed (S,) state cut by ``layout`` (written here independently of gtcrn.deploy.onnx)."""
    return [packed[e["offset"]:e["offset"] + int(np.prod(e["shape"]))].reshape(e["shape"]) for e in layout]


def run_frames(model: torch.nn.Module, path: Path, spec: torch.Tensor, step_frames: int = 10) -> float:
    """Feed every frame of ``spec`` (1, 257, T, 2) to onnxruntime with its packed state fed back;
    compare with the torch model: ``model.step`` frame by frame (output and every state tensor,
    unpacked by the metadata layout) for the first ``step_frames`` frames, then
    ``forward_stateful`` on the rest in one call (equal to stepping, see tests/test_stream.py)
    for every enhanced frame and the final state. Returns the worst absolute difference."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["frame", "state"]
    assert [o.name for o in sess.get_outputs()] == ["enhanced_frame", "state_out"]
    size, layout = layout_of(sess)
    packed = np.zeros(size, np.float32)  # the zero state, as init_state
    state = model.init_state(1)
    assert [tuple(e["shape"]) for e in layout] == [tuple(t.shape) for t in state.values()]
    worst = 0.0
    with torch.inference_mode():
        for t in range(step_frames):
            frame = spec[:, :, t:t + 1].contiguous()  # (1, 257, 1, 2)
            out, state = model.step(frame, state)
            got, packed = sess.run(None, {"frame": frame.numpy(), "state": packed})
            assert got.shape == tuple(out.shape) and packed.shape == (size,) and packed.dtype == np.float32
            for a, b in zip([got, *unpack(packed, layout)], [out, *state.values()], strict=True):
                worst = max(worst, float(np.abs(a - b.numpy()).max()))
        rest, state = model.forward_stateful(spec[:, :, step_frames:], state)  # (1, 257, T', 2)
    for t in range(rest.shape[2]):
        got, packed = sess.run(None, {"frame": spec[:, :, step_frames + t:step_frames + t + 1].numpy(),
                                      "state": packed})
        worst = max(worst, float(np.abs(got - rest[:, :, t:t + 1].numpy()).max()))
    for a, b in zip(unpack(packed, layout), state.values(), strict=True):
        worst = max(worst, float(np.abs(a - b.numpy()).max()))
    return worst


@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_export_matches_torch_step(tmp_path: Path, preset: str) -> None:
    model = make_model(preset)
    path = export_onnx(model, tmp_path / f"{preset}.onnx", verify=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    names = state_names(model)
    # Exactly two inputs and two outputs: the frame and the packed state.
    assert [i.name for i in proto.graph.input] == ["frame", "state"]
    assert [o.name for o in proto.graph.output] == ["enhanced_frame", "state_out"]
    assert names[0] == "encoder.en_convs.2.cache" and "dpgrnn.1.inter_rnn.h" in names
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["gtcrn.state_names"]) == names and meta["gtcrn.hop"] == "256"
    assert meta["gtcrn.graph"] == "step"
    layout = json.loads(meta["gtcrn.state_layout"])
    shapes = [tuple(t.shape) for t in model.init_state(1).values()]
    assert [e["name"] for e in layout] == names and [tuple(e["shape"]) for e in layout] == shapes
    offsets = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])  # packed back to back, in order
    assert [e["offset"] for e in layout] == offsets[:-1].tolist()
    assert int(meta["gtcrn.state_size"]) == offsets[-1]
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*proto.graph.input,
                                                                          *proto.graph.output)]
    assert dims == [[1, N_FREQS, 1, 2], [offsets[-1]], [1, N_FREQS, 1, 2], [offsets[-1]]]
    spec = stft(torch.from_numpy(speech_like(100 * 256, seed=21))[None])[:, :, :100]  # (1, 257, 100, 2)
    assert run_frames(model, path, spec) <= TOL
    # An independent model gives clearly different outputs: the comparison can fail.
    assert verify_onnx(make_model(preset), path, frames=3) > 1e-2  # fresh random weights


def test_packed_state_round_trips(tmp_path: Path) -> None:
    """``state_out`` after some frames, unpacked by the metadata layout, is the torch model's state
    after the same frames; packing that torch state and running on gives the torch outputs."""
    model = make_model("gtcrn-g32")
    path = export_onnx(model, tmp_path / "m.onnx", verify=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size, layout = layout_of(sess)
    spec = stft(torch.from_numpy(speech_like(24 * 256, seed=25))[None])[:, :, :24]  # (1, 257, 24, 2)
    packed = np.zeros(size, np.float32)
    for t in range(12):
        _, packed = sess.run(None, {"frame": spec[:, :, t:t + 1].numpy(), "state": packed})
    with torch.inference_mode():
        _, state = model.forward_stateful(spec[:, :, :12], model.init_state(1))
        rest, _ = model.forward_stateful(spec[:, :, 12:], state)  # (1, 257, 12, 2)
    got = unpack(packed, layout)
    assert all(np.abs(s.numpy()).max() > 1e-3 for s in state.values())  # every state tensor is non-trivial
    for e, a, b in zip(layout, got, state.values(), strict=True):
        assert np.abs(a - b.numpy()).max() <= TOL, e["name"]
    # The library's unpack_state agrees with the independent cut above, and pack_state inverts it.
    lib = unpack_state(packed, layout)
    assert list(lib) == [e["name"] for e in layout]
    assert all(np.array_equal(lib[e["name"]], a) for e, a in zip(layout, got, strict=True))
    repacked = pack_state(state)  # (S,) from the torch state
    assert repacked.shape == (size,) and np.abs(repacked - packed).max() <= TOL
    # A torch state packed by pack_state continues the stream like the graph's own state.
    for t in range(12):
        out, repacked = sess.run(None, {"frame": spec[:, :, 12 + t:13 + t].numpy(), "state": repacked})
        assert np.abs(out - rest[:, :, t:t + 1].numpy()).max() <= TOL
    # A wrong (zero) state visibly changes the output: the state is really used.
    out0, _ = sess.run(None, {"frame": spec[:, :, 12:13].numpy(), "state": np.zeros(size, np.float32)})
    assert np.abs(out0 - rest[:, :, :1].numpy()).max() > 1e-3


@pytest.mark.parametrize("overrides", [{"stem_groups": 16, "head_groups": 8}, {"skip_fusion": False}])
def test_export_g32_variants_match(tmp_path: Path, overrides: dict) -> None:
    """Band stems of several bands per group and g32 without SkipFusion export and match torch."""
    model = make_model("gtcrn-g32", **overrides)
    path = export_onnx(model, tmp_path / "variant.onnx", verify=False)
    spec = stft(torch.from_numpy(speech_like(40 * 256, seed=24))[None])[:, :, :40]  # (1, 257, 40, 2)
    assert run_frames(model, path, spec) <= TOL


@pytest.mark.parametrize("preset", ["gtcrn-g32", "gtcrn-official"])
def test_chunk_graph_matches_torch_in_chunks_of_any_length(tmp_path: Path, preset: str) -> None:
    """The chunk graph over chunks of 1, 7 and 50 frames, its packed state fed back, equals the torch
    model over the whole signal (every frame and the final state)."""
    model = make_model(preset)
    path = export_onnx(model, tmp_path / "chunk.onnx", verify=False, chunk=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["spec", "state"]
    assert sess.get_inputs()[0].shape[2] == "T" and sess.get_modelmeta().custom_metadata_map[
        "gtcrn.graph"] == "chunk"
    size, layout = layout_of(sess)
    spec = stft(torch.from_numpy(speech_like(58 * 256, seed=26))[None])[:, :, :58]  # (1, 257, 58, 2)
    with torch.inference_mode():
        ref, ref_state = model.forward_stateful(spec, None)
    packed, outs = np.zeros(size, np.float32), []
    for a, b in ((0, 1), (1, 8), (8, 58)):
        out, packed = sess.run(None, {"spec": spec[:, :, a:b].numpy(), "state": packed})
        outs.append(out)
    assert np.abs(np.concatenate(outs, axis=2) - ref.numpy()).max() <= TOL
    for a, b in zip(unpack(packed, layout), ref_state.values(), strict=True):
        assert np.abs(a - b.numpy()).max() <= TOL
    assert verify_onnx(model, path) <= TOL and verify_onnx(make_model(preset), path, frames=3) > 1e-2


def test_export_verifies_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("gtcrn-g32")
    import gtcrn.deploy.onnx as export

    monkeypatch.setattr(export, "verify_onnx", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match="differs"):
        export.export_onnx(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_official_checkpoint_export(tmp_path: Path, upstream_dir: Path) -> None:
    model = gtcrn.load_upstream(upstream_dir / "model_trained_on_dns3.tar")
    path = export_onnx(model, tmp_path / "dns3.onnx")  # verify=True: checked against the torch model
    ref = np.load(upstream_dir / "reference_io.npz")
    spec = torch.from_numpy(ref["input_spec"]).float()[None, :, :60]  # (1, 257, 60, 2)
    assert run_frames(model, path, spec) <= TOL


def test_cli_export(tmp_path: Path) -> None:
    from gtcrn.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", "--config", "gtcrn-official", "-o", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, N_FREQS, 1, 2]
    assert sess.get_inputs()[1].shape == [layout_of(sess)[0]] and len(sess.get_outputs()) == 2


@pytest.mark.parametrize("chunk", [False, True])
def test_ir_version_is_the_oldest_the_opset_allows(tmp_path: Path, chunk: bool) -> None:
    """The file must load in onnxruntime releases older than the ``onnx`` package that wrote it:
    opset 17 needs IR version 8 (ONNX's version table: onnx 1.12), whatever the writer's newest."""
    import onnx

    path = export_onnx(make_model("gtcrn-official"), tmp_path / "m.onnx", opset=17, verify=False, chunk=chunk)
    assert onnx.load(str(path)).ir_version == 8


def test_numpy_onnxruntime_example_matches_offline(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    model = make_model("gtcrn-g32")
    path = export_onnx(model, tmp_path / "m.onnx", verify=False)
    x = speech_like(16000 + 123, seed=23)
    noisy, enhanced = tmp_path / "noisy.wav", tmp_path / "enhanced.wav"
    sf.write(str(noisy), x, 16000, subtype="FLOAT")
    # torch and gtcrn are made unimportable: the example needs numpy, onnxruntime and soundfile only.
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['gtcrn'] = None; "
            f"sys.argv = ['x', {str(path)!r}, {str(noisy)!r}, {str(enhanced)!r}, '--chunk', '100']; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    y, sr = sf.read(str(enhanced), dtype="float32")
    with torch.inference_mode():
        ref = model.enhance_waveform(torch.from_numpy(x)).numpy()
    assert sr == 16000 and y.shape == ref.shape
    assert np.abs(y - ref).max() <= TOL


def test_example_streamer_edges(tmp_path: Path) -> None:
    """The example's OnnxStreamer on short signals and 1-sample chunks (imported in-process)."""
    import runpy

    example = runpy.run_path(str(EXAMPLE))
    model = make_model("gtcrn-official")
    path = export_onnx(model, tmp_path / "m.onnx", verify=False)
    session = example["make_session"](str(path))
    for n, chunk in ((300, 1), (1000, 7), (256, 50)):
        x = speech_like(n, seed=n)
        s = example["OnnxStreamer"](session)
        y = np.concatenate([s.feed(x[i:i + chunk]) for i in range(0, n, chunk)] + [s.flush()])
        assert y.shape == (n,)
        if n > 256:
            with torch.inference_mode():
                ref = model.enhance_waveform(torch.from_numpy(x)).numpy()
            assert np.abs(y - ref).max() <= TOL, n
        else:  # numpy reflect padding, like gtcrn.stream.Streamer
            np.testing.assert_allclose(y, reference_short(model, x), rtol=1e-3, atol=TOL)


def test_benchmark_onnx_steppers(tmp_path: Path) -> None:
    """The benchmark's two onnxruntime loops (run() and IOBinding ping-pong) compute the same
    thing as the torch model, for our export and for the official model when present."""
    from gtcrn.benchmark import _frames, _OrtStepper, time_onnx

    model = make_model("gtcrn-official")
    paths = {"ours": export_onnx(model, tmp_path / "m.onnx", verify=False)}
    official = ROOT.parent / "shared" / "upstream-gtcrn" / "gtcrn.onnx"
    if official.is_file():
        paths["official"] = official
    frames = _frames(12)  # (12, 1, 257, 1, 2)
    with torch.inference_mode():
        ref = model(torch.from_numpy(frames[:, 0, :, 0]).permute(1, 0, 2)[None])  # (1, 257, 12, 2)
    for name, path in paths.items():
        plain, bound = _OrtStepper(path), _OrtStepper(path, iobinding=True)
        plain.run(frames)
        bound.run(frames)
        assert len(plain.times) == len(bound.times) == 12
        np.testing.assert_allclose(bound.last_output, plain.last_output, atol=1e-6)
        if name == "ours":  # one packed state in and out
            assert plain.state_names == ["state"] and plain.outputs == ["enhanced_frame", "state_out"]
            assert np.abs(plain.last_output[0, :, 0] - ref[0, :, -1].numpy()).max() <= TOL
    lat = time_onnx(paths, frames=4, warmup=2, iobinding=True)
    assert all(v.calls == 4 and v.median_ms > 0 for v in lat.values())
