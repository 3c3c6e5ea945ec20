"""Speed and memory benchmark: offline real-time factor of each engine (onnxruntime on the
chunk graph, the default; the deploy model in torch), per-frame streaming latency (the deploy
model's torch step and the onnxruntime step graph), peak memory of a long file, and optionally
the official streaming ONNX model timed the same way in the same run; with sherpa-onnx installed,
the CPU time of sherpa-onnx's offline denoiser on our sherpa-onnx exports and on the official model
(with sherpa-onnx's metadata added in a temporary copy), in the same run.

Everything runs on one CPU thread (``torch.set_num_threads(1)``; onnxruntime with one
intra-op thread, sequential execution, all graph optimisations). Latencies are timed
per call with ``time.perf_counter``; the onnxruntime sessions are timed round-robin in
blocks so that a busy machine slows all of them alike. Used by ``gtcrn benchmark``;
this module never parses arguments.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .complexity import complexity
from .config import ModelConfig
from .engine import ort_session
from .extras import available, require
from .stft import N_FREQS, SAMPLE_RATE, stft

BLOCK = 25  # frames per round-robin block when timing several sessions


@dataclass
class Latency:
    """Per-call times in milliseconds."""

    median_ms: float
    p99_ms: float
    calls: int

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 99)), len(ms))

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} / {self.p99_ms:.3f}"


@dataclass
class PresetResult:
    name: str
    weights: str
    learnable_params: int
    macs_per_second: float
    offline_rtf: float | None = None
    offline_rtf_torch: float | None = None
    torch_step: Latency | None = None
    onnx_step: Latency | None = None
    onnx_step_iob: Latency | None = None
    onnx_nodes: int | None = None
    memory: dict[str, Any] | None = None
    memory_streamer: dict[str, Any] | None = None


@dataclass
class BenchmarkResult:
    presets: list[PresetResult] = field(default_factory=list)
    official_onnx: Latency | None = None
    official_onnx_iob: Latency | None = None
    official_path: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    sherpa_cpu: dict[str, float] = field(default_factory=dict)  # CPU s per s of audio, by model
    sherpa_note: str | None = None  # why the sherpa-onnx row is missing or incomplete


def _model(spec: str) -> tuple[torch.nn.Module, str]:
    """(model, what its weights are) for a model spec (:func:`gtcrn.checkpoint.model_from_spec`).
    A preset name gives its shipped weights when installed, else a random initialisation (the
    speed is the same)."""
    from .checkpoint import CheckpointError, load_model, model_from_spec, split_spec
    from .config import PRESETS
    from .nn import GTCRN

    if spec in PRESETS:
        try:
            return load_model(spec).eval(), "shipped"
        except CheckpointError:
            return GTCRN(ModelConfig.preset(spec)).eval(), "random init"
    kind = split_spec(spec)[0]
    weights = {"upstream": "official", "untrained": "random init", "preset": "shipped"}.get(kind,
                                                                                          "checkpoint")
    return model_from_spec(spec).eval(), weights


def speech_like_noise(seconds: float, seed: int = 0) -> torch.Tensor:
    """Speech-like test noise at about 0.1 rms: (N,) float32."""
    gen = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    x = np.convolve(gen.standard_normal(n + 8), np.hanning(9), mode="same")[8:]
    env = 0.2 + np.abs(np.sin(2 * np.pi * 4.0 * np.arange(n) / SAMPLE_RATE)) ** 2
    x = x * env
    return torch.from_numpy((x / np.sqrt(np.mean(x**2)) * 0.1).astype(np.float32))


def offline_rtf(model: torch.nn.Module, seconds: float, repeats: int = 2, engine: str = "auto") -> float:
    """Best-of-``repeats`` processing time / audio duration of offline enhancement with ``engine``
    (the :class:`gtcrn.Streamer` of ``gtcrn.enhance``: the whole signal fed at once, run in chunks
    of 256 frames; the engine is built before the clock starts)."""
    from .engine import make_engine
    from .stream import Streamer

    wav = speech_like_noise(seconds).numpy()
    runner = make_engine(model, engine)

    def run(x: np.ndarray) -> None:
        streamer = Streamer(model, max_frames=256, engine=runner)
        streamer.feed(x)
        streamer.flush()

    run(wav[:SAMPLE_RATE])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(wav)
        best = min(best, time.perf_counter() - start)
    return best / seconds


def _frames(count: int) -> np.ndarray:
    """Realistic STFT frames (count, 1, 257, 1, 2) float32 from the test signal."""
    wav = speech_like_noise(count * 256 / SAMPLE_RATE + 0.1, seed=1)
    spec = stft(wav[None])  # (1, 257, T, 2)
    return spec.permute(2, 0, 1, 3).unsqueeze(3).numpy()[:count]  # (T, 1, 257, 1, 2)


def torch_step_latency(model: torch.nn.Module, frames: int, warmup: int = 20) -> Latency:
    """The deploy model's ``step`` in torch, one frame at a time."""
    from .deploy import to_deploy

    model = to_deploy(model)
    data = torch.from_numpy(_frames(frames + warmup))
    times = []
    with torch.inference_mode():
        state = model.init_state(1)
        for i in range(frames + warmup):
            start = time.perf_counter()
            _, state = model.step(data[i], state)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return Latency.of(times)


class _OrtStepper:
    """Runs a streaming ONNX step model (first input: one STFT frame; the rest: caches that the
    outputs after the first give back, in order) and records per-call times.

    Our exports (:mod:`gtcrn.deploy.onnx`) have exactly one cache, the packed state:
    ``(frame, state (S,)) -> (enhanced_frame, state_out (S,))``, zeros before the first
    frame; the official model keeps its own interface (the frame plus three caches).

    ``iobinding=False``: ``session.run`` with a feed dict (the simplest loop).
    ``iobinding=True``: the states stay in two preallocated sets of buffers that the two
    bindings swap (outputs of one call are the inputs of the next); each timed call copies
    the frame in, runs and copies the enhanced frame out.
    """

    def __init__(self, path: str | Path, iobinding: bool = False) -> None:
        import onnxruntime as ort

        self.session = ort_session(str(path))
        inputs = self.session.get_inputs()
        self.frame_name = inputs[0].name
        if list(inputs[0].shape) != [1, N_FREQS, 1, 2]:
            raise ValueError(f"{path}: first input {inputs[0].name} has shape {inputs[0].shape}, "
                             f"expected [1, {N_FREQS}, 1, 2]")
        self.state_names = [i.name for i in inputs[1:]]
        self.outputs = [o.name for o in self.session.get_outputs()]
        if len(self.outputs) != len(inputs):
            raise ValueError(f"{path}: {len(inputs)} inputs but {len(self.outputs)} outputs")
        if any(not isinstance(d, int) for i in inputs[1:] for d in i.shape):
            raise ValueError(f"{path}: state inputs need fixed shapes")
        self.state = {i.name: np.zeros(i.shape, np.float32) for i in inputs[1:]}  # zero state
        self.iobinding = iobinding
        self.times: list[float] = []
        self.last_output: np.ndarray | None = None
        if iobinding:
            value = ort.OrtValue.ortvalue_from_numpy
            self.frame = value(np.zeros((1, N_FREQS, 1, 2), np.float32))
            self.out = value(np.zeros((1, N_FREQS, 1, 2), np.float32))
            sets = [[value(v.copy()) for v in self.state.values()] for _ in range(2)]
            self.bindings = []
            for src, dst in ((sets[0], sets[1]), (sets[1], sets[0])):
                b = self.session.io_binding()
                b.bind_ortvalue_input(self.frame_name, self.frame)
                b.bind_ortvalue_output(self.outputs[0], self.out)
                for name, out_name, x, y in zip(self.state_names, self.outputs[1:], src, dst, strict=True):
                    b.bind_ortvalue_input(name, x)
                    b.bind_ortvalue_output(out_name, y)
                self.bindings.append(b)
            self.turn = 0

    def run(self, frames: np.ndarray, record: bool = True) -> None:
        for frame in frames:
            if self.iobinding:
                start = time.perf_counter()
                self.frame.update_inplace(frame)
                self.session.run_with_iobinding(self.bindings[self.turn])
                self.last_output = self.out.numpy()
                elapsed = time.perf_counter() - start
                self.turn ^= 1
            else:
                feeds = {self.frame_name: frame, **self.state}
                start = time.perf_counter()
                outs = self.session.run(self.outputs, feeds)
                elapsed = time.perf_counter() - start
                self.state = dict(zip(self.state_names, outs[1:], strict=True))
                self.last_output = outs[0]
            if record:
                self.times.append(elapsed)


def time_onnx(paths: dict[str, Path], frames: int, warmup: int = 20, iobinding: bool = False
              ) -> dict[str, Latency]:
    """Per-frame latency of several streaming ONNX models, timed round-robin in blocks."""
    data = _frames(frames + warmup)
    steppers = {k: _OrtStepper(p, iobinding) for k, p in paths.items()}
    for s in steppers.values():
        s.run(data[:warmup], record=False)
    for start in range(warmup, warmup + frames, BLOCK):
        for s in steppers.values():
            s.run(data[start:min(start + BLOCK, warmup + frames)])
    return {k: Latency.of(s.times) for k, s in steppers.items()}


def sherpa_offline_cpu(paths: dict[str, Path], seconds: float, repeats: int = 3) -> dict[str, float]:
    """CPU time (``time.process_time``) per second of audio of sherpa-onnx's ``OfflineSpeechDenoiser``
    (one thread) on each sherpa-onnx GTCRN model, run in turn ``repeats`` times; the best of each."""
    from .export import sherpa_denoiser

    wav = speech_like_noise(seconds, seed=3).numpy()
    denoisers = {name: sherpa_denoiser(path) for name, path in paths.items()}
    for denoiser in denoisers.values():
        denoiser(wav[:SAMPLE_RATE], SAMPLE_RATE)  # warm-up
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeats):
        for name, denoiser in denoisers.items():
            start = time.process_time()
            denoiser(wav, SAMPLE_RATE)
            best[name] = min(best[name], time.process_time() - start)
    return {name: cpu / seconds for name, cpu in best.items()}


_MEMORY_SCRIPT = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import soundfile as sf
from gtcrn.benchmark import _model
model, _ = _model(sys.argv[1])
src, dst = sys.argv[2], sys.argv[3]
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
def status_mb(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key)) / 1024.0
before = status_mb("VmRSS:")
load_peak = status_mb("VmHWM:")
try:  # reset the high-water mark (Linux >= 4.0) so that it measures the enhancement only
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
start = time.perf_counter()
try:
    if sys.argv[4] != "auto":
        raise ImportError
    from gtcrn.inference import enhance_file
    enhance_file(src, dst, model, overwrite=True)
    how = "gtcrn.inference.enhance_file"
except ImportError:
    from gtcrn.stream import Streamer
    s = Streamer(model)
    with sf.SoundFile(dst, "w", samplerate=16000, channels=1, subtype="FLOAT") as out:
        for block in sf.blocks(src, blocksize=16000, dtype="float32"):
            out.write(s.feed(block))
        out.write(s.flush())
    how = "gtcrn.stream.Streamer"
elapsed = time.perf_counter() - start
peak = status_mb("VmHWM:") if reset else rss_mb()
print(json.dumps({"before_mb": before, "peak_mb": peak, "process_peak_mb": max(load_peak, peak),
                  "getrusage_mb": rss_mb(), "seconds": elapsed, "how": how}))
"""


def file_memory(preset: str, minutes: float, workdir: Path, how: str = "auto") -> dict[str, Any]:
    """Peak RSS of a fresh process enhancing a ``minutes`` long 16 kHz file (ru_maxrss).

    ``how``: ``"auto"`` (``gtcrn.inference.enhance_file`` when it exists) or ``"streamer"``
    (1-second blocks through :class:`gtcrn.stream.Streamer`).

    ``before_mb``: resident memory after imports and model loading; ``peak_mb``: the
    high-water mark while enhancing (``VmHWM``, reset after loading; Linux);
    ``growth_mb``: the difference (bounded when the file is processed block by block,
    whatever its length); ``process_peak_mb``: the process's own peak, loading included.
    ``getrusage_mb`` (``ru_maxrss``) is reported too, but on Linux it keeps the parent's
    pre-``exec`` peak, so it can exceed the child's real peak.
    """
    import soundfile as sf

    src = workdir / f"long_{minutes:g}min.wav"
    if not src.exists():
        sf.write(str(src), speech_like_noise(minutes * 60, seed=2).numpy(), SAMPLE_RATE, subtype="PCM_16")
    dst = workdir / "long_enhanced.wav"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, preset, str(src), str(dst), how],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark failed: {proc.stderr.strip().splitlines()[-1:]}")
    import json

    info = json.loads(proc.stdout.strip().splitlines()[-1])
    dst.unlink(missing_ok=True)
    return {"peak_mb": info["peak_mb"], "before_mb": info["before_mb"],
            "process_peak_mb": info["process_peak_mb"], "getrusage_mb": info["getrusage_mb"],
            "growth_mb": info["peak_mb"] - info["before_mb"], "rtf": info["seconds"] / (minutes * 60),
            "how": info["how"], "minutes": minutes}


def environment() -> dict[str, str]:
    ort = require("onnxruntime", "onnx", "gtcrn benchmark")

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    env = {"cpu": cpu, "cores": str(os.cpu_count()), "load average (1/5/15 min)": load,
           "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()}
    if available("sherpa_onnx"):
        from importlib.metadata import version

        env["sherpa-onnx"] = version("sherpa-onnx")
    return env


def run_benchmark(models: list[str], seconds: float = 60.0, frames: int = 500,
                  memory_minutes: float = 10.0, official_onnx: str | Path | None = None,
                  log: Any = None) -> BenchmarkResult:
    """Run every measurement on each model spec of ``models`` (preset names, checkpoint paths,
    ``upstream:PATH``, ...); ``memory_minutes=0`` skips the long-file memory test."""
    import onnx

    from .deploy.onnx import export_onnx
    from .export import export_sherpa_onnx, official_with_metadata

    for module in ("onnx", "onnxruntime"):  # fail before the long torch measurements
        require(module, "onnx", "gtcrn benchmark")

    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    torch.set_num_threads(1)
    result = BenchmarkResult(environment=environment())
    sherpa = available("sherpa_onnx")
    if not sherpa:
        result.sherpa_note = "sherpa-onnx is not installed (the [sherpa] extra): no sherpa-onnx row"
    with tempfile.TemporaryDirectory(prefix="gtcrn-bench-") as tmp:
        workdir = Path(tmp)
        onnx_paths: dict[str, Path] = {}
        sherpa_paths: dict[str, Path] = {}
        for i, name in enumerate(models):
            model, weights = _model(name)
            c = complexity(model)
            row = PresetResult(name, weights, c["learnable_params"], c["macs_per_second"])
            say(f"{name}: offline real-time factor, onnxruntime and torch engines ({seconds:g} s)")
            row.offline_rtf = offline_rtf(model, seconds, engine="onnx")
            row.offline_rtf_torch = offline_rtf(model, seconds, engine="torch")
            say(f"{name}: torch step latency ({frames} frames)")
            row.torch_step = torch_step_latency(model, frames)
            say(f"{name}: ONNX export")
            onnx_paths[name] = export_onnx(model, workdir / f"model{i}.onnx")
            row.onnx_nodes = len(onnx.load(str(onnx_paths[name])).graph.node)
            if sherpa:
                sherpa_paths[name] = export_sherpa_onnx(model, workdir / f"sherpa{i}.onnx")
            if memory_minutes > 0:
                say(f"{name}: peak memory enhancing a {memory_minutes:g}-minute file")
                row.memory = file_memory(name, memory_minutes, workdir)
                if row.memory["how"] != "gtcrn.stream.Streamer":
                    row.memory_streamer = file_memory(name, memory_minutes, workdir, how="streamer")
            result.presets.append(row)
        if official_onnx is not None and Path(official_onnx).is_file():
            onnx_paths["official"] = Path(official_onnx)
            result.official_path = str(official_onnx)
        say(f"onnxruntime step latency ({frames} frames, round-robin over {len(onnx_paths)} models)")
        lat = time_onnx(onnx_paths, frames)
        say("onnxruntime step latency with IOBinding")
        lat_iob = time_onnx(onnx_paths, frames, iobinding=True)
        for row in result.presets:
            row.onnx_step = lat[row.name]
            row.onnx_step_iob = lat_iob[row.name]
        result.official_onnx = lat.get("official")
        result.official_onnx_iob = lat_iob.get("official")
        if sherpa:
            if "official" in onnx_paths:  # a temporary copy with sherpa-onnx's metadata added
                sherpa_paths["official"] = official_with_metadata(onnx_paths["official"],
                                                                  workdir / "official-sherpa.onnx")
            else:
                result.sherpa_note = "no official gtcrn.onnx (--official-onnx): no sherpa-onnx comparison"
            say(f"sherpa-onnx offline denoiser, CPU time ({seconds:g} s, {len(sherpa_paths)} models in turn)")
            result.sherpa_cpu = sherpa_offline_cpu(sherpa_paths, seconds)
    return result


TARGETS = {
    "onnx_speedup": 3.0,  # our onnxruntime step vs the official ONNX model, per frame
    "torch_step_ms": 2.0,
    "offline_rtf": 0.01,
}


def format_markdown(result: BenchmarkResult) -> str:
    """The results as a Markdown table plus notes and target checks."""
    minutes = next((r.memory["minutes"] for r in result.presets if r.memory), None)
    mem_head = (f"{minutes:g}-min file: peak RSS MB (growth)" if minutes
                else "long file: peak RSS MB (growth)")
    lines = [
        "| model | weights | learnable params | MMACs/s | offline RTF, onnxruntime (default) "
        "| offline RTF, torch | torch step ms (median / p99) "
        "| onnxruntime step ms, run() (median / p99) | onnxruntime step ms, IOBinding (median / p99) "
        f"| ONNX nodes | {mem_head} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.presets:
        mem = f"{r.memory['peak_mb']:.0f} ({r.memory['growth_mb']:+.0f})" if r.memory else "-"
        lines.append(f"| {r.name} | {r.weights} | {r.learnable_params:,} | {r.macs_per_second / 1e6:.2f} "
                     f"| {r.offline_rtf:.4f} | {r.offline_rtf_torch:.4f} | {r.torch_step} | {r.onnx_step} "
                     f"| {r.onnx_step_iob} | {r.onnx_nodes} | {mem} |")
    if result.official_onnx is not None:
        lines.append(f"| official gtcrn.onnx | DNS3 | | | | | | {result.official_onnx} "
                     f"| {result.official_onnx_iob} | | |")
    lines.append("")
    if result.official_onnx is not None:
        for r in result.presets:
            ratio = result.official_onnx.median_ms / r.onnx_step.median_ms
            ratio_iob = result.official_onnx_iob.median_ms / r.onnx_step_iob.median_ms
            ok = "met" if ratio >= TARGETS["onnx_speedup"] else "NOT met"
            ok_iob = "met" if ratio_iob >= TARGETS["onnx_speedup"] else "NOT met"
            lines.append(f"- {r.name}: onnxruntime step {ratio:.2f}x faster than the official ONNX model "
                         f"with run() ({ok}), {ratio_iob:.2f}x with IOBinding ({ok_iob}); medians, "
                         f"target >= {TARGETS['onnx_speedup']:g}x")
    for r in result.presets:
        ok_t = "met" if r.torch_step.median_ms < TARGETS["torch_step_ms"] else "NOT met"
        ok_r = "met" if r.offline_rtf < TARGETS["offline_rtf"] else "NOT met"
        lines.append(f"- {r.name}: torch step median {r.torch_step.median_ms:.2f} ms (target < "
                     f"{TARGETS['torch_step_ms']:g} ms: {ok_t}); offline RTF {r.offline_rtf:.4f} with the "
                     f"default engine (target < {TARGETS['offline_rtf']:g}: {ok_r}), "
                     f"{r.offline_rtf_torch:.4f} with torch")
        for mem in (r.memory, r.memory_streamer):
            if mem:
                lines.append(f"- {r.name}: {mem['minutes']:g}-minute file via {mem['how']}: RTF "
                             f"{mem['rtf']:.4f}; RSS {mem['before_mb']:.0f} MB after imports and model "
                             f"loading, peak while enhancing {mem['peak_mb']:.0f} MB "
                             f"({mem['growth_mb']:+.0f} MB; VmHWM); process peak incl. loading "
                             f"{mem['process_peak_mb']:.0f} MB")
    if result.sherpa_cpu:
        lines += _sherpa_table(result)
    if result.sherpa_note:
        lines.append(f"- {result.sherpa_note}")
    env = result.environment
    lines.append("- environment: " + "; ".join(f"{k} {v}" for k, v in env.items())
                 + "; 1 thread everywhere")
    return "\n".join(lines)


def _sherpa_table(result: BenchmarkResult) -> list[str]:
    """The sherpa-onnx rows: CPU time per second of audio, and against the official model."""
    official = result.sherpa_cpu.get("official")
    lines = ["", "| sherpa-onnx OfflineSpeechDenoiser, 1 thread | CPU s per s of audio | vs official |",
             "|---|---:|---:|"]
    for name, cpu in result.sherpa_cpu.items():
        label = "official gtcrn.onnx + sherpa-onnx metadata" if name == "official" else f"{name} (our export)"
        ratio = "1x" if name == "official" else f"{official / cpu:.2f}x less CPU" if official else ""
        lines.append(f"| {label} | {cpu:.4f} | {ratio} |")
    lines.append("")
    return lines


def default_official_onnx() -> Path | None:
    """``../shared/upstream-gtcrn/gtcrn.onnx`` beside a development checkout, if present."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd().parent):
        path = base / "shared" / "upstream-gtcrn" / "gtcrn.onnx"
        if path.is_file():
            return path
    return None


__all__ = ["BenchmarkResult", "Latency", "PresetResult", "default_official_onnx", "file_memory",
           "format_markdown", "offline_rtf", "run_benchmark", "sherpa_offline_cpu", "time_onnx",
           "torch_step_latency"]
