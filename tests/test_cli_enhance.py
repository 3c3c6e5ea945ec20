"""`gtcrn enhance`: naming, folders and globs, overwrite rules, bad inputs, exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import gtcrn
from gtcrn import checkpoint, extras, inference
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
    sf.write(os.fsencode(path), x.T if x.ndim == 2 else x, sr, subtype=subtype)
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
    # no progress bar when stderr is not a terminal: one summary line
    assert re.fullmatch(r"gtcrn enhance: 1 file written, 0\.3 s of audio in \d+\.\d s\n",
                        capsys.readouterr().err)
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
    assert re.fullmatch(rf"gtcrn enhance: 3 files written, 1\.5 s of audio in \d+\.\d s; {len(expected)} "
                        r"of 8 files failed", err.strip().splitlines()[-1])
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
    assert "--model PATH" in err[0] and "--model upstream:PATH" in err[0]
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
    # from this source checkout the hint is the editable install of the extra ...
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.wav"), "--plot", "--checkpoint", ckpt]) == 2
    assert capsys.readouterr().err.strip().endswith("--plot needs matplotlib: pip install -e '.[plot]'")
    # ... and after `pip install gtcrn` the package's extra
    monkeypatch.setattr(extras, "source_root", lambda: None)
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.wav"), "--plot", "--checkpoint", ckpt]) == 2
    assert capsys.readouterr().err.strip().endswith("--plot needs matplotlib: pip install 'gtcrn[plot]'")
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
    lines = run.stderr.splitlines()
    assert len(lines) == 2, run.stderr
    assert lines[0] == f"gtcrn enhance: error: {tmp_path / 'missing.wav'}: no such file or folder"
    assert re.fullmatch(r"gtcrn enhance: 1 file written, 0\.1 s of audio in \d+\.\d s; 1 of 2 files failed",
                        lines[1])
    info = sf.info(str(tmp_path / "out" / "in.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 6000, "PCM_16")


# ---- what a new user meets --------------------------------------------------------------------------

def test_a_name_that_is_not_utf8(tmp_path, ckpt, capsys):
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes in a UTF-8 locale
    write(tmp_path / name, noise(3000), 16000, "PCM_16")
    assert main(["enhance", str(tmp_path / name), "--checkpoint", ckpt]) == 0
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"caf\xe9.wav", b"caf\xe9_enhanced.wav"]
    info = sf.info(os.fsencode(tmp_path / os.fsdecode(b"caf\xe9_enhanced.wav")))
    assert (info.frames, info.subtype) == (3000, "PCM_16")


def test_truncated_empty_and_nan_inputs_say_exactly_what_is_wrong(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    write(src / "whole.wav", noise(32000), 16000, "PCM_16")
    data = (src / "whole.wav").read_bytes()
    (src / "half.wav").write_bytes(data[: len(data) // 2])  # head -c: the header still says 32000
    held = (len(data) // 2 - (len(data) - 2 * 32000)) // 2
    (src / "zero.wav").write_bytes(b"")
    bad = noise(80000)
    bad[70000] = np.nan
    write(src / "nan.wav", bad, 16000, "FLOAT")
    assert main(["enhance", str(src), "-o", str(tmp_path / "out"), "--checkpoint", ckpt]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [
        f"gtcrn enhance: error: {src / 'half.wav'}: truncated: header says 32000 frames, file holds {held}",
        f"gtcrn enhance: error: {src / 'nan.wav'}: contains NaN or infinite samples (the first at sample "
        "70000, 4.375 s)",
        f"gtcrn enhance: error: {src / 'zero.wav'}: empty file (0 bytes)",
    ]
    assert files_under(tmp_path / "out") == ["whole.wav"]


def test_float_input_above_full_scale_into_flac_warns_with_the_count(tmp_path, ckpt, capsys):
    t = np.arange(16000) / 16000
    loud = (1.6 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # +4 dBFS
    src = write(tmp_path / "loud.wav", loud, 16000, "FLOAT")
    assert main(["enhance", str(src), "-o", str(tmp_path / "float.wav"), "--checkpoint", ckpt]) == 0
    y, _ = sf.read(str(tmp_path / "float.wav"), dtype="float32")  # a float output keeps everything
    expected = int((np.abs(y) > 1.0).sum())
    assert expected > 0
    capsys.readouterr()
    assert main(["enhance", str(src), "-o", str(tmp_path / "loud.flac"), "--checkpoint", ckpt]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"gtcrn enhance: warning: {tmp_path / 'loud.flac'}: {expected} samples above full "
                      "scale (0 dBFS) clipped, as PCM_24 cannot hold them (the input is louder than 0 "
                      "dBFS; a float WAV output keeps it)")
    assert np.abs(sf.read(str(tmp_path / "loud.flac"))[0]).max() <= 1.0


@pytest.mark.parametrize("sig,status,word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_enhance_leaves_nothing_behind(tmp_path, ckpt, sig, status, word):
    src = write(tmp_path / "long.wav", noise(16000 * 300), 16000, "FLOAT")  # 5 minutes
    out = tmp_path / "out"
    exe = shutil.which("gtcrn")
    cmd = [exe] if exe else [sys.executable, "-m", "gtcrn.cli"]
    proc = subprocess.Popen([*cmd, "enhance", str(src), "-o", str(out) + "/", "--checkpoint", ckpt],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(p.suffix == ".part" for p in out.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "no partial output appeared"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == f"gtcrn enhance: {word}"
    assert files_under(tmp_path) == ["long.wav"] and not out.exists()


def test_skip_existing_resumes_a_batch(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    for name in ("a.wav", "b.wav", "c.wav"):
        write(src / name, noise(3000, seed=len(name) + ord(name[0])))
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt]) == 0
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt]) == 1  # without it: refused
    (out / "b.wav").unlink()
    (out / ".b.wav.x1y2.part").write_bytes(b"half of a file")  # left by a killed run: not an output
    kept = (out / "a.wav").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["enhance", str(src), "-o", str(out), "--skip-existing", "--checkpoint", ckpt]) == 0
    assert re.fullmatch(r"gtcrn enhance: 1 file written, 0\.2 s of audio in \d+\.\d s; 2 skipped "
                        r"\(output exists\)\n", capsys.readouterr().err)
    assert (out / "a.wav").stat().st_mtime_ns == kept and sf.info(str(out / "b.wav")).frames == 3000
    with pytest.raises(SystemExit, match="2"):  # argparse: not both
        main(["enhance", str(src), "-o", str(out), "--skip-existing", "--overwrite", "--checkpoint", ckpt])


def test_an_output_with_an_audio_extension_is_one_file(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(Path("one.wav"), noise(3000))
    write(Path("two.wav"), noise(3000, seed=1))
    write(Path("d/three.wav"), noise(3000, seed=2))
    for inputs in (["one.wav", "two.wav"], ["d"], ["*.wav"]):
        assert main(["enhance", *inputs, "-o", "both.wav", "--checkpoint", ckpt]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("gtcrn enhance: error: both.wav: an output with an audio extension is one "
                               "file, but ") and line.endswith("give an output folder (e.g. both/)")
    assert files_under(tmp_path) == ["d/three.wav", "one.wav", "two.wav"]  # no folder named both.wav


def test_output_dash_writes_wav_to_standard_output(tmp_path, ckpt, capsysbinary, model):
    x = noise(5000)
    src = write(tmp_path / "in.flac", x, 16000, "PCM_16")
    assert main(["enhance", str(src), "-o", "-", "--checkpoint", ckpt]) == 0
    captured = capsysbinary.readouterr()
    y, sr = sf.read(io.BytesIO(captured.out), dtype="float32")
    assert sr == 16000 and y.shape == (5000,) and captured.out[:4] == b"RIFF"
    x16 = sf.read(str(src), dtype="float32")[0]
    with torch.inference_mode():
        ref = model.enhance_waveform(torch.from_numpy(x16)).numpy()
    np.testing.assert_allclose(y, ref, atol=2 / 32768)  # PCM_16 kept
    assert b"1 file written" in captured.err
    assert files_under(tmp_path) == ["in.flac"]  # no folder named "-"
    assert main(["enhance", str(src), str(src), "-o", "-", "--checkpoint", ckpt]) == 2
    assert b"exactly one input file" in capsysbinary.readouterr().err


def test_one_thread_by_default(tmp_path, ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    src = write(tmp_path / "x.wav", noise(3000))
    assert main(["enhance", str(src), "--checkpoint", ckpt]) == 0
    assert main(["enhance", str(src), "--checkpoint", ckpt, "--overwrite", "--threads", "3"]) == 0
    assert calls == [1, 3]


def test_the_progress_bar_ends_at_its_total_without_warnings(tmp_path, model, capsys):
    write(tmp_path / "x.wav", noise(48064))  # 3.004 s: rounds below the exact duration
    write(tmp_path / "y.wav", noise(7993), 22050)  # 0.3625 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's "clamping frac to range [0, 1]" would raise
        inference.enhance_paths([tmp_path / "x.wav", tmp_path / "y.wav"], tmp_path / "out", model,
                                progress=True, block_size=4096)
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.fullmatch(r"file 2/2: 100%\|█+\| 3\.4/3\.4 s \[\d\d:\d\d<00:00\]", final), final


# ---- large corpora ----------------------------------------------------------------------------------

def _cli() -> list[str]:
    exe = shutil.which("gtcrn")
    return [exe] if exe else [sys.executable, "-m", "gtcrn"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every audio output under ``folder`` by relative path (manifests left out)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.suffix != ".jsonl"}


def _manifest_inputs(path: Path) -> list[str]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["manifest"] == "gtcrn enhance"
    return [r["input"] for r in lines[1:]]


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory, ckpt) -> tuple[Path, Path]:
    """A folder of files of several rates, channel counts, lengths and subtypes in sub-folders,
    and its outputs from one ordinary process."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "in"
    for k, (name, shape, sr, subtype) in enumerate([
            ("a.wav", 16000, 16000, "PCM_16"), ("b.flac", (2, 24000), 48000, "PCM_24"),
            ("x/c.wav", 8000, 8000, "FLOAT"), ("x/d.wav", 40000, 16000, "PCM_16"),
            ("x/y/e.wav", (3, 9000), 22050, "FLOAT"), ("f.wav", 3000, 16000, "PCM_16"),
            ("y/g.aiff", 20000, 44100, "PCM_16"), ("y/h.wav", 64000, 16000, "FLOAT")]):
        write(src / name, noise(shape, seed=k), sr, subtype)
    assert main(["enhance", str(src), "-o", str(root / "ref"), "--checkpoint", ckpt]) == 0
    return src, root / "ref"


def test_two_processes_with_shards_write_the_bytes_of_one_process(shard_corpus, tmp_path, ckpt):
    src, ref = shard_corpus
    out = tmp_path / "out"
    procs = [subprocess.Popen([*_cli(), "enhance", str(src), "-o", str(out), "--checkpoint", ckpt,
                               "--shard", f"{i}/2"], stderr=subprocess.PIPE, text=True, env=_env())
             for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert _outputs(out) == _outputs(ref)
    # each shard wrote its own outputs and its own manifest part; together they are every input once
    parts = [_manifest_inputs(out / f"manifest.part-{i}-of-2.jsonl") for i in range(2)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    for i, err in enumerate(errs):
        assert re.fullmatch(rf"gtcrn enhance: shard {i}/2: {len(parts[i])} files? written, .* s; manifest "
                            rf"{re.escape(str(out))}/manifest\.part-{i}-of-2\.jsonl\n", err)
    run = subprocess.run([*_cli(), "merge", str(out)], capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{out / 'manifest.jsonl'}: 8 inputs from 2 shards: 8 written, 0 skipped, 0 failed\n"
    inputs = sorted(str(p) for p in src.rglob("*") if p.is_file())
    assert _manifest_inputs(out / "manifest.jsonl") == inputs


def test_torchrun_with_two_processes_writes_the_bytes_of_one_process(shard_corpus, tmp_path, ckpt):
    pytest.importorskip("torch.distributed.run")
    src, ref = shard_corpus
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                          "2", "-m", "gtcrn", "enhance", str(src), "-o", str(out), "--checkpoint", ckpt],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for i in range(2):
        assert f"gtcrn enhance: shard {i}/2 from RANK/WORLD_SIZE (--shard 0/1 processes everything)" \
            in run.stderr
    assert _outputs(out) == _outputs(ref)
    assert main(["merge", str(out / "manifest.jsonl")]) == 0
    assert _manifest_inputs(out / "manifest.jsonl") == sorted(str(p) for p in src.rglob("*") if p.is_file())


def test_a_killed_run_resumes_with_the_same_outputs_and_does_not_redo_finished_files(tmp_path, ckpt):
    src = tmp_path / "in"
    for k, seconds in enumerate([1, 1, 30, 30, 30, 30]):
        write(src / f"{k}.wav", noise(16000 * seconds, seed=k), 16000, "PCM_16")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(ref), "--checkpoint", ckpt]) == 0
    command = [*_cli(), "enhance", str(src), "-o", str(out), "--checkpoint", ckpt, "--manifest",
               str(tmp_path / "run.jsonl")]
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and len(list(out.glob("?.wav"))) >= 2 and list(out.glob(".*.part"))):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # no clean-up at all
        proc.wait(timeout=60)
    finally:
        proc.kill()
    finished = {p.name: p.stat() for p in out.glob("?.wav")}
    assert 2 <= len(finished) < 6 and list(out.glob(".*.part"))  # a partial file is left
    run = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(rf"gtcrn enhance: {6 - len(finished)} files? written, .*; {len(finished)} skipped "
                        r"\(output exists\); manifest .*run\.jsonl\n", run.stderr)
    for name, st in finished.items():  # not recomputed: the very same files
        now = (out / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert _outputs(out) == _outputs(ref) and files_under(out) == files_under(ref)  # no .part left
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in lines[1:]) == [str(src / f"{k}.wav") for k in range(6)]
    # the files the killed run finished keep its lines: written, with the seconds they took then
    assert all(r["status"] == "written" and r["seconds"] > 0 for r in lines[1:])


def test_a_slurm_array_task_gives_the_shard(tmp_path, ckpt, monkeypatch, capsys):
    src = tmp_path / "in"
    for k in range(5):
        write(src / f"{k}.wav", noise(3000 + 500 * k, seed=k))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "11")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")  # --array=10-11
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("gtcrn enhance: shard 1/2 from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT "
                      "(--shard 0/1 processes everything)")
    mine = sorted(Path(p).name for p in _manifest_inputs(out / "manifest.part-1-of-2.jsonl"))
    assert sorted(_outputs(out)) == mine and 0 < len(mine) < 5
    # --shard 0/1 does it all (and resumes: the shard's outputs are kept)
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt, "--shard", "0/1",
                 "--skip-existing"]) == 0
    assert sorted(_outputs(out)) == [f"{k}.wav" for k in range(5)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "12")  # not a task of this array
    assert main(["enhance", str(src), "-o", str(out), "--checkpoint", ckpt]) == 2
    assert "SLURM_ARRAY_TASK_ID=12 is not one of the 2 tasks" in capsys.readouterr().err


def test_batch_seconds_goes_on_past_a_bad_file_and_equals_file_by_file(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    for k in range(4):
        n = 8000 + 500 * k  # within 80% of each other: one batch
        write(src / f"{k}.wav", noise((2, n) if k % 2 else n, seed=k), 16000, "FLOAT")
    (src / "bad.wav").write_bytes(b"RIFF")
    assert main(["enhance", str(src), "-o", str(tmp_path / "ref"), "--checkpoint", ckpt]) == 1
    capsys.readouterr()
    assert main(["enhance", str(src), "-o", str(tmp_path / "out"), "--checkpoint", ckpt,
                 "--batch-seconds", "60"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"gtcrn enhance: error: {src / 'bad.wav'}: ")  # one line, and the rest goes on
    assert len(err) == 2 and re.fullmatch(r"gtcrn enhance: 4 files written, .*; 1 of 5 files failed; "
                                          r"4 in batches", err[1])
    for k in range(4):
        a = sf.read(str(tmp_path / "ref" / f"{k}.wav"), dtype="float32")[0]
        b = sf.read(str(tmp_path / "out" / f"{k}.wav"), dtype="float32")[0]
        np.testing.assert_allclose(b, a, atol=2e-6, rtol=0)


@pytest.mark.parametrize("args,message", [
    (["--shard", "2/2"], "2/2: I must be in 0..N-1"), (["--shard", "1"], "give I/N"),
    (["--batch-seconds", "0"], "--batch-seconds must be positive"),
    (["--shard", "0/2", "-o", "-"], "-o - writes one file to standard output: not with --shard"),
    (["--batch-seconds", "10", "--plot"], "--plot draws each file's own spectra: not with --batch-seconds")])
def test_corpus_options_that_make_no_sense_are_one_line(tmp_path, ckpt, capsys, args, message):
    src = write(tmp_path / "a.wav", noise(3000))
    try:
        status = main(["enhance", str(src), "--checkpoint", ckpt, *args])
    except SystemExit as exc:  # argparse's own
        status = exc.code
    assert status == 2 and message in capsys.readouterr().err
    assert files_under(tmp_path) == ["a.wav"]
