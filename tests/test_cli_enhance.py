"""`gtcrn enhance`: naming, folders and globs, overwrite rules, bad inputs, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import gtcrn
from gtcrn import checkpoint, inference
from gtcrn.cli import main
from tests.helpers import make_model


@pytest.fixture(scope="module")
def model() -> gtcrn.GTCRN:
    torch.manual_seed(0)
    return make_model("gtcrn-g32")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model) -> str:
    return str(gtcrn.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pt"))


def noise(shape, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T if x.ndim == 2 else x, sr, subtype=subtype)
    return path


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden ones included), as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("gtcrn enhance: error:")]


# ---- naming, folders, globs -----------------------------------------------------------------------

def test_default_naming_beside_the_input(tmp_path, ckpt, model, capsys):
    x = noise(5000)
    src = write(tmp_path / "a.wav", x, subtype="FLOAT")
    assert main(["enhance", str(src), "--checkpoint", ckpt]) == 0
    out = tmp_path / "a_enhanced.wav"
    y, sr = sf.read(str(out), dtype="float32")
    with torch.inference_mode():
        ref = model.enhance_waveform(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert capsys.readouterr().err == ""  # quiet: no progress bar when stderr is not a terminal
    # a second run refuses to overwrite, and does with --overwrite
    before = out.stat().st_mtime_ns
    assert main(["enhance", str(src), "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "a_enhanced.wav: output exists" in err
    assert "1 of 1 files failed" in err
    assert out.stat().st_mtime_ns == before
    assert main(["enhance", str(src), "--checkpoint", ckpt, "--overwrite"]) == 0
    assert files_under(tmp_path) == ["a.wav", "a_enhanced.wav"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_engine_by_name(tmp_path, ckpt, model, engine, monkeypatch):
    """--engine picks what runs the model, once for all files; both give the plain model's output."""
    made = []
    real = inference.make_engine
    monkeypatch.setattr(inference, "make_engine", lambda m, e: made.append(e) or real(m, e))
    x = [noise(4000, seed=s) for s in (1, 2)]
    srcs = [write(tmp_path / f"{i}.wav", v, subtype="FLOAT") for i, v in enumerate(x)]
    assert main(["enhance", *map(str, srcs), "-o", str(tmp_path / "out"), "--checkpoint", ckpt,
                 "--engine", engine]) == 0
    # Built once by the command: the library only ever receives that engine object.
    assert made and all(e is made[0] for e in made) and made[0].name == engine
    for i, v in enumerate(x):
        y, _ = sf.read(str(tmp_path / "out" / f"{i}.wav"), dtype="float32")
        with torch.inference_mode():
            np.testing.assert_allclose(y, model.enhance_waveform(torch.from_numpy(v)).numpy(), atol=1e-5)


def test_folder_is_mirrored_under_the_output_folder(tmp_path, ckpt):
    src = tmp_path / "in"
    write(src / "x.wav", noise(3000), 16000, "PCM_16")
    write(src / "sub" / "deeper" / "y.flac", noise((2, 4000)), 44100, "PCM_24")
    write(src / "sub" / "z.ogg", noise(5000), 8000)
    write(src / ".hidden.wav", noise(3000))
    (src / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt]) == 0
    assert files_under(out) == ["sub/deeper/y.flac", "sub/z.ogg", "x.wav"]
    for rel in files_under(out):
        a, b = sf.info(str(src / rel)), sf.info(str(out / rel))
        assert (b.samplerate, b.channels, b.frames, b.subtype) == (a.samplerate, a.channels, a.frames,
                                                                  a.subtype)


def test_output_folder_inside_the_input_folder_is_not_searched(tmp_path, ckpt):
    write(tmp_path / "d" / "x.wav", noise(3000))
    for _ in range(2):
        assert main(["enhance", str(tmp_path / "d"), "-o", str(tmp_path / "d" / "out"), "--overwrite",
                     "--checkpoint", ckpt]) == 0
    assert files_under(tmp_path / "d") == ["out/x.wav", "x.wav"]


def test_progress_bar_when_asked(tmp_path, model, capsys):
    write(tmp_path / "x.wav", noise(3000))
    batch = inference.enhance_paths([tmp_path / "x.wav", tmp_path / "nope.wav"], tmp_path / "out", model,
                                    progress=True, report=lambda msg: print("REPORT", msg))
    assert (batch.failed, batch.total) == (1, 2)
    captured = capsys.readouterr()
    assert "file 2/2" in captured.err and "REPORT" in captured.out and "nope.wav" in captured.out
    batch = inference.enhance_paths([tmp_path / "nope.wav"], None, model, progress=True)
    assert (batch.failed, batch.total) == (1, 1)


def test_in_place_folder_run_skips_its_own_outputs(tmp_path, ckpt):
    write(tmp_path / "d" / "x.wav", noise(3000))
    write(tmp_path / "d" / "s" / "y.wav", noise(3000))
    assert main(["enhance", str(tmp_path / "d"), "--checkpoint", ckpt]) == 0
    assert files_under(tmp_path / "d") == ["s/y.wav", "s/y_enhanced.wav", "x.wav", "x_enhanced.wav"]
    assert main(["enhance", str(tmp_path / "d"), "--checkpoint", ckpt, "--overwrite"]) == 0
    assert len(files_under(tmp_path / "d")) == 4  # no x_enhanced_enhanced.wav


def test_globs_and_several_inputs(tmp_path, ckpt, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(Path("data/a/one.wav"), noise(3000))
    write(Path("data/b/two.wav"), noise(3000))
    write(Path("data/b/three.flac"), noise(3000))
    write(Path("solo.wav"), noise(3000))
    assert main(["enhance", "data/**/*.wav", "solo.wav", "-o", "out", "--checkpoint", ckpt]) == 0
    assert files_under(Path("out")) == ["a/one.wav", "b/two.wav", "solo.wav"]
    assert main(["enhance", "data/*/t*.*", "-o", "out2", "--checkpoint", ckpt]) == 0
    assert files_under(Path("out2")) == ["b/three.flac", "b/two.wav"]
    capsys.readouterr()
    assert main(["enhance", "nothing/*.wav", "missing.wav", "solo.wav", "-o", "out3",
                 "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 2
    assert "nothing/*.wav: no files match" in lines[0] and "missing.wav: no such file" in lines[1]
    assert "2 of 3 files failed" in err
    assert files_under(Path("out3")) == ["solo.wav"]


def test_single_file_output_path_and_folder(tmp_path, ckpt):
    src = write(tmp_path / "in.flac", noise(4000), 16000, "PCM_16")
    assert main(["enhance", str(src), "-o", str(tmp_path / "renamed.wav"), "--checkpoint", ckpt]) == 0
    info = sf.info(str(tmp_path / "renamed.wav"))
    assert (info.format, info.subtype, info.frames) == ("WAV", "PCM_16", 4000)  # format from the name
    (tmp_path / "folder").mkdir()
    assert main(["enhance", str(src), "-o", str(tmp_path / "folder"), "--checkpoint", ckpt]) == 0
    assert main(["enhance", str(src), "-o", str(tmp_path / "new") + "/", "--checkpoint", ckpt]) == 0
    assert files_under(tmp_path / "folder") == ["in.flac"] and files_under(tmp_path / "new") == ["in.flac"]


def test_colliding_outputs_fail_the_second_file(tmp_path, ckpt, capsys):
    a = write(tmp_path / "a" / "x.wav", noise(3000))
    b = write(tmp_path / "b" / "x.wav", noise(3000, seed=1))
    assert main(["enhance", str(a), str(b), "-o", str(tmp_path / "out"), "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "also the output of" in err and "1 of 2 files failed" in err
    assert files_under(tmp_path / "out") == ["x.wav"]


def test_output_rate_and_attenuation_limit_flags(tmp_path, ckpt, capsys):
    n = 44100 // 3 + 7
    src = write(tmp_path / "in.wav", noise((2, n)), 44100, "PCM_16")
    out = tmp_path / "o.wav"
    assert main(["enhance", str(src), "-o", str(out), "--output-rate", "16000",
                 "--attenuation-limit", "10", "--checkpoint", ckpt, "--threads", "1",
                 "--device", "cpu"]) == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, round(n * 16000 / 44100))
    assert main(["enhance", str(src), "-o", str(tmp_path / "p.wav"), "--attenuation-limit", "-3",
                 "--checkpoint", ckpt]) == 2
    assert main(["enhance", str(src), "-o", str(tmp_path / "p.wav"), "--threads", "0",
                 "--checkpoint", ckpt]) == 2
    err = capsys.readouterr().err
    assert "--attenuation-limit must be >= 0" in err and "--threads must be >= 1" in err
    assert not (tmp_path / "p.wav").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_usage_error(tmp_path, ckpt, capsys):
    src = write(tmp_path / "in.wav", noise(3000))
    assert main(["enhance", str(src), "--device", "cuda", "--checkpoint", ckpt]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ---- bad inputs -----------------------------------------------------------------------------------

def test_bad_inputs_are_reported_one_line_each_and_the_batch_goes_on(tmp_path, ckpt, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    (src / "text.wav").write_text("this is not audio\n")
    good = noise(20000, seed=4)
    write(src / "full.flac", good)
    data = (src / "full.flac").read_bytes()
    (src / "truncated.flac").write_bytes(data[: len(data) // 2])
    (src / "full.flac").unlink()
    write(src / "empty.wav", np.zeros(0, np.float32))
    write(src / "short.wav", noise(100))
    write(src / "zeros.wav", np.zeros((2, 8000), np.float32))
    bad = good.copy()
    bad[5000] = np.nan
    write(src / "nan.wav", bad, subtype="FLOAT")
    t = np.arange(16000)
    write(src / "clipped.wav", np.where(np.sin(2 * np.pi * 150 * t / 16000) >= 0, 1.0, -1.0), 16000, "PCM_16")
    write(src / "locked.wav", noise(3000))
    locked = src / "locked.wav"
    if os.geteuid() == 0:  # root reads anything: make the OS refuse this one file instead
        real_open = open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == locked:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)
    else:
        locked.chmod(0)
    out = tmp_path / "out"
    code = main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt])
    err = capsys.readouterr().err
    assert code == 1
    lines = error_lines(err)
    expected = {"text.wav": "not a readable audio file", "truncated.flac": "read error",
                "empty.wav": "contains no audio samples", "nan.wav": "contains NaN or infinite samples",
                "locked.wav": "permission denied"}
    assert len(lines) == len(expected)
    for name, problem in expected.items():
        assert sum(f"{src / name}: {problem}" in line for line in lines) == 1, (name, lines)
    assert err.strip().splitlines()[-1] == f"gtcrn enhance: {len(expected)} of 8 files failed"
    assert files_under(out) == ["clipped.wav", "short.wav", "zeros.wav"]  # no partial or temp files
    short, _ = sf.read(str(out / "short.wav"))
    assert short.shape == (100,) and np.isfinite(short).all()
    zeros, _ = sf.read(str(out / "zeros.wav"), always_2d=True)
    assert zeros.shape == (8000, 2) and np.isfinite(zeros).all() and np.abs(zeros).max() < 1e-3
    clipped, _ = sf.read(str(out / "clipped.wav"))
    assert np.isfinite(clipped).all() and np.abs(clipped).max() <= 1.0


def test_output_equal_to_input_is_refused(tmp_path, ckpt, capsys):
    src = write(tmp_path / "x.wav", noise(3000))
    before = src.read_bytes()
    assert main(["enhance", str(src), "-o", str(src), "--overwrite", "--checkpoint", ckpt]) == 1
    # several inputs into their own folder: each output would land on an input
    other = write(tmp_path / "y.wav", noise(3000, seed=2))
    assert main(["enhance", str(src), str(other), "-o", str(tmp_path), "--overwrite",
                 "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 3 and all("input file" in line for line in error_lines(err))
    assert src.read_bytes() == before
    assert files_under(tmp_path) == ["x.wav", "y.wav"]


def test_unwritable_output_folder(tmp_path, ckpt, capsys):
    src = write(tmp_path / "x.wav", noise(3000))
    if os.geteuid() == 0:  # root writes anywhere: put the folder below a regular file instead
        (tmp_path / "blocker").write_text("a file, not a folder")
        target = tmp_path / "blocker" / "out"
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        target = tmp_path / "ro" / "out"
    assert main(["enhance", str(src), "-o", str(target) + "/", "--checkpoint", ckpt]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(target) in lines[0] and "cannot" in lines[0]
    assert files_under(tmp_path) == (["blocker", "x.wav"] if os.geteuid() == 0 else ["x.wav"])


# ---- models ---------------------------------------------------------------------------------------

def test_no_model_installed_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path / "none")
    monkeypatch.setattr(inference, "_DEFAULT_MODEL", None)
    src = write(tmp_path / "x.wav", noise(3000))
    assert main(["enhance", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pretrained model is installed" in err[0]
    assert "--checkpoint" in err[0] and "--upstream" in err[0]
    assert files_under(tmp_path) == ["x.wav"]
    assert main(["enhance", str(src), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: no such checkpoint file" in capsys.readouterr().err


def test_upstream_checkpoint_reproduces_the_official_output(tmp_path, upstream_dir):
    ref = np.load(upstream_dir / "reference_io.npz")
    src = write(tmp_path / "noisy.wav", ref["noisy_wave"].astype(np.float32), 16000, "FLOAT")
    out = tmp_path / "enhanced.wav"
    assert main(["enhance", str(src), "-o", str(out),
                 "--upstream", str(upstream_dir / "model_trained_on_dns3.tar")]) == 0
    y, sr = sf.read(str(out), dtype="float32")
    expected = ref["output_wave_dns3"]
    n = min(len(y), len(expected))
    np.testing.assert_allclose(y[:n], expected[:n], atol=1e-4)


def test_plot_writes_a_png_beside_the_output(tmp_path, ckpt, monkeypatch, capsys):
    src = write(tmp_path / "x.wav", noise((2, 8000)), 22050)
    if inference.matplotlib_available():
        assert main(["enhance", str(src), "--plot", "--checkpoint", ckpt]) == 0
        png = tmp_path / "x_enhanced.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert files_under(tmp_path) == ["x.wav", "x_enhanced.png", "x_enhanced.wav"]
    monkeypatch.setattr(inference, "matplotlib_available", lambda: False)
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.wav"), "--plot", "--checkpoint", ckpt]) == 2
    assert "pip install 'gtcrn[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_real_subprocess(tmp_path, ckpt):
    src = write(tmp_path / "in.wav", noise((2, 6000)), 48000, "PCM_16")
    exe = shutil.which("gtcrn")
    cmd = [exe] if exe else [sys.executable, "-m", "gtcrn.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*cmd, "enhance", str(src), str(tmp_path / "missing.wav"), "-o",
                          str(tmp_path / "out"), "--checkpoint", ckpt, "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1, run.stderr
    assert run.stderr.splitlines() == [f"gtcrn enhance: error: {tmp_path / 'missing.wav'}: no such file "
                                       "or folder", "gtcrn enhance: 1 of 2 files failed"]
    info = sf.info(str(tmp_path / "out" / "in.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 6000, "PCM_16")
