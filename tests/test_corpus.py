"""gtcrn.corpus: shards from launchers, the duration-balanced partition, batched enhancement equal
to file-by-file, the run manifest (resume, merge) and enhance_corpus."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gtcrn import corpus, inference
from gtcrn.corpus import ManifestError, ShardError, enhance_corpus, merge_manifest, part_path
from gtcrn.stream import Streamer
from tests.helpers import make_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model("gtcrn-g32")


def noise(shape, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = 16000, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), x.T if x.ndim == 2 else x, sr, subtype=subtype)
    return path


# ---- shards ------------------------------------------------------------------------------------

def test_the_shard_comes_from_torchrun_or_a_slurm_array_or_both():
    assert corpus.shard_from_env({}) is None
    assert corpus.shard_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == \
        ((1, 4), "RANK/WORLD_SIZE")
    # an array --array=4-7: task ids 4..7 are shards 0..3
    slurm = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "4"}
    assert corpus.shard_from_env(slurm)[0] == (2, 4)
    # --array=1-9:2 (ids 1, 3, 5, 7, 9): id 7 is shard 3 of 5
    assert corpus.shard_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "5",
                                  "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"})[0] == (3, 5)
    # torchrun with 2 processes in task 2 of the array: shards 4, 5 of 8
    both = corpus.shard_from_env({**slurm, "RANK": "1", "WORLD_SIZE": "2"})
    assert both == ((5, 8), "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT and RANK/WORLD_SIZE")
    for bad in ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "4"},
                {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "4"},
                {"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(ShardError):
            corpus.shard_from_env(bad)
    # an explicit shard wins; one shard of one is no sharding
    assert corpus.resolve_shard((0, 3), {"RANK": "1", "WORLD_SIZE": "2"}) == ((0, 3), "--shard")
    assert corpus.resolve_shard(None, {"RANK": "0", "WORLD_SIZE": "1"})[0] is None
    assert corpus.resolve_shard(None, {}) == (None, "")
    with pytest.raises(ShardError):
        corpus.check_shard((3, 3))
    assert corpus.local_device("cpu", {"LOCAL_RANK": "1"}) == "cpu"


def test_the_partition_covers_every_item_once_balances_durations_and_ignores_input_order():
    rng = random.Random(0)
    keys = [f"f{i:03d}.wav" for i in range(200)]
    weights = [rng.choice([500, 1000, 3000, 20000, 60000]) for _ in keys]
    shards = corpus.partition(keys, weights, 4)
    assert sorted(i for s in shards for i in s) == list(range(200))
    loads = [sum(weights[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(weights)  # greedy longest-first bound
    counts = [len(s) for s in shards]
    # by duration, not by count: the shards' file counts differ while their audio does not
    assert max(loads) / min(loads) < 1.02 and max(counts) != min(counts)
    for s in shards:
        assert [keys[i] for i in s] == sorted(keys[i] for i in s)
    # another process that listed the same files in another order computes the same shards
    order = list(range(200))
    rng.shuffle(order)
    again = corpus.partition([keys[i] for i in order], [weights[i] for i in order], 4)
    assert [{keys[order[i]] for i in s} for s in again] == [{keys[i] for i in s} for s in shards]
    # files of no duration (unreadable) are spread too
    assert [len(s) for s in corpus.partition(list("abcd"), [0, 0, 0, 0], 2)] == [2, 2]


# ---- batches -----------------------------------------------------------------------------------

def test_a_batch_of_streams_equals_each_stream_on_its_own(model):
    lengths = [(1, 4000), (2, 257), (1, 4096), (1, 9999), (3, 700)]
    streams = [noise(shape, seed=i) for i, shape in enumerate(lengths)]
    batched = corpus.enhance_streams(model, streams, max_frames=7)
    for x, y in zip(streams, batched, strict=True):
        s = Streamer(model)
        ref = np.concatenate([s.feed(x), s.flush()], axis=1)
        assert y.shape == x.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, atol=1e-6, rtol=0)
    # The end of each row needs its own last frame: padding alone changes the last n % 256
    # samples (the longer batch overlap-adds a padded frame there).
    x = streams[0]
    padded = np.concatenate([x, x[:, -257:-1][:, ::-1], np.zeros((1, 3000), np.float32)], axis=1)
    s = Streamer(model)
    naive = np.concatenate([s.feed(padded), s.flush()], axis=1)[:, :x.shape[1]]
    np.testing.assert_allclose(naive[:, :-(4000 % 256)], batched[0][:, :-(4000 % 256)], atol=1e-6)
    assert np.abs(naive[:, -(4000 % 256):] - batched[0][:, -(4000 % 256):]).max() > 1e-3
    with pytest.raises(ValueError, match="more than 256"):
        corpus.enhance_streams(model, [noise((1, 256))])


def test_batches_stay_within_their_budget_and_group_similar_lengths():
    sizes = [(1, 16000 * s) for s in (1, 9, 2, 8, 3, 7)] + [(2, 16000 * 5), (1, 16000 * 40)]
    keys = [f"{i}" for i in range(len(sizes))]
    budget = 16000 * 20
    groups = corpus.plan_batches(sizes, keys, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for g in groups:
        rows = sum(sizes[i][0] for i in g)
        longest = max(sizes[i][1] for i in g) + corpus.PAD
        assert len(g) == 1 or rows * longest <= budget
        assert min(sizes[i][1] for i in g) + corpus.PAD >= corpus.MIN_FILL * longest  # little padding
    assert [7] in groups  # longer than the budget: alone
    assert groups[1] == [1, 3]  # 9 s and 8 s together, longest first


# ---- enhance_corpus ------------------------------------------------------------------------------

@pytest.fixture()
def mixed(tmp_path) -> Path:
    """Files of several rates, channel counts, lengths and subtypes, one unreadable."""
    src = tmp_path / "in"
    specs = [("a.wav", (1, 16000), 16000, "FLOAT"), ("b.flac", (2, 30001), 48000, "PCM_24"),
             ("sub/c.wav", (1, 5000), 8000, "FLOAT"), ("sub/d.wav", (1, 20000), 16000, "PCM_16"),
             ("e.wav", (1, 200), 16000, "FLOAT"), ("f.wav", (3, 12000), 22050, "FLOAT"),
             ("long.wav", (1, 16000 * 12), 16000, "FLOAT")]
    for k, (name, shape, sr, subtype) in enumerate(specs):
        write(src / name, noise(shape, seed=k), sr, subtype)
    (src / "bad.wav").write_bytes(b"RIFF not really")
    return src


def test_batched_enhancement_equals_file_by_file(mixed, tmp_path, model):
    ref = inference.enhance_paths([mixed], tmp_path / "ref", model, attenuation_limit=12, progress=False)
    errors: list[str] = []
    run = enhance_corpus([mixed], tmp_path / "bat", model, batch_seconds=4.0, attenuation_limit=12,
                         progress=False, report=errors.append)
    # a.wav, b.flac, sub/c.wav, sub/d.wav, f.wav in batches; e.wav (too short), long.wav (longer
    # than a batch) and bad.wav (unreadable) file by file
    assert run.batched == 5 and run.written == 7 and run.failed == 1 == ref.failed
    assert errors == [r.error for r in ref.results if r.error]  # the same one line, once
    for r in ref.results:
        if r.error is None:
            out = tmp_path / "bat" / r.output.relative_to(tmp_path / "ref")
            a, sr_a = sf.read(str(r.output), dtype="float32", always_2d=True)
            b, sr_b = sf.read(str(out), dtype="float32", always_2d=True)
            assert sr_a == sr_b and sf.info(str(out)).subtype == sf.info(str(r.output)).subtype
            assert a.shape == b.shape
            lsb = 2e-6 if sf.info(str(out)).subtype == "FLOAT" else 1.01 / 32768  # PCM: one step
            np.testing.assert_allclose(b, a, atol=lsb, rtol=0)


def test_an_interrupted_run_resumes_without_redoing_finished_files(mixed, tmp_path, model, monkeypatch):
    (mixed / "bad.wav").unlink()
    manifest = tmp_path / "run.jsonl"
    full = enhance_corpus([mixed], tmp_path / "full", model, progress=False)
    assert full.written == 7
    calls: list[Path] = []
    stop = [4]
    real = inference.enhance_file  # what corpus and enhance_paths both call, via enhance_job

    def counting(source, output, *args, **kwargs):
        calls.append(Path(source))
        if len(calls) == stop[0]:  # Ctrl-C during the fourth file of the first run
            raise KeyboardInterrupt
        return real(source, output, *args, **kwargs)

    monkeypatch.setattr(inference, "enhance_file", counting)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        enhance_corpus([mixed], out, model, manifest=manifest, progress=False)
    done = {p.relative_to(out): p.stat() for p in out.rglob("*.*")}
    assert len(done) == 3
    header, records = corpus.read_manifest(manifest)
    assert header["inputs"] == 7 and [r["status"] for r in records] == ["written"] * 3
    stale = out / ".f.wav.abc123.part"  # as a killed writer of f.wav (not finished) leaves it
    stale.write_bytes(b"half")
    with open(manifest, "a") as fh:
        fh.write('{"input": "cut sh')  # the last line of a killed run
    calls.clear()
    stop[0] = 0
    run = enhance_corpus([mixed], out, model, manifest=manifest, progress=False)
    assert run.written == 4 and run.skipped == 3 and len(calls) == 4
    assert not any(mixed / rel in calls for rel in done)  # the finished files were not enhanced again
    for rel, st in done.items():
        now = (out / rel).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert not stale.exists() and not list(out.rglob("*.part"))
    for p in (tmp_path / "full").rglob("*.*"):  # the same bytes as an uninterrupted run
        assert (out / p.relative_to(tmp_path / "full")).read_bytes() == p.read_bytes(), p
    header, records = corpus.read_manifest(manifest)
    inputs = sorted(str(p) for p in mixed.rglob("*.*"))
    assert sorted(r["input"] for r in records) == inputs  # every input exactly once
    assert all(r["status"] == "written" and r["seconds"] > 0 for r in records)  # kept from run 1


def test_shards_write_their_parts_and_the_merge_covers_every_input_once(mixed, tmp_path, model):
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    runs = [enhance_corpus([mixed], out, model, shard=(i, 3), manifest=manifest, progress=False)
            for i in range(3)]
    assert sum(r.total for r in runs) == 8 and sum(r.failed for r in runs) == 1
    merged = merge_manifest(manifest)
    assert merged.shards == 3
    header, records = corpus.read_manifest(manifest)
    assert header["inputs"] == header["corpus_inputs"] == 8 and header["merged_from"] == 3
    assert [r["input"] for r in records] == sorted(str(p) for p in mixed.rglob("*.*"))
    bad = next(r for r in records if r["input"].endswith("bad.wav"))
    assert bad["status"] == "failed" and "bad.wav" in bad["error"] and bad["duration_s"] is None
    good = next(r for r in records if r["input"].endswith("a.wav"))
    assert good["output"] == str(out / "a.wav") and good["duration_s"] == 1.0

    # a part that misses lines (its shard was stopped), a duplicate, a missing part, two shardings
    part = part_path(manifest, (1, 3))
    lines = part.read_text().splitlines(keepends=True)
    assert len(lines) >= 2
    part.write_text("".join(lines[:-1]))
    with pytest.raises(ManifestError, match="did not finish; run it again"):
        merge_manifest(manifest)
    part.write_text("".join(lines + lines[1:2]))
    with pytest.raises(ManifestError, match="twice"):
        merge_manifest(manifest)
    part.unlink()
    with pytest.raises(ManifestError, match=r"no part for shard\(s\) 1/3"):
        merge_manifest(manifest)
    part.write_text("".join(lines))
    extra = part_path(manifest, (0, 2))
    extra.write_text(part.read_text())
    with pytest.raises(ManifestError, match="2 different shardings"):
        merge_manifest(manifest)
    extra.unlink()
    other = json.loads(lines[0])
    part.write_text(json.dumps({**other, "corpus": "0" * 16}) + "\n" + "".join(lines[1:]))
    with pytest.raises(ManifestError, match="another corpus"):
        merge_manifest(manifest)
    with pytest.raises(ManifestError, match="no parts"):
        merge_manifest(tmp_path / "nothing.jsonl")


def test_names_that_are_not_utf8_survive_the_manifest(tmp_path, model):
    name = os.fsdecode(b"caf\xe9.wav")
    write(tmp_path / "in" / name, noise(3000))
    manifest = tmp_path / "m.jsonl"
    run = enhance_corpus([tmp_path / "in"], tmp_path / "out", model, manifest=manifest, progress=False)
    assert run.written == 1
    _, records = corpus.read_manifest(manifest)
    assert records[0]["input"] == str(tmp_path / "in" / name) and Path(records[0]["output"]).is_file()


def test_the_throughput_script_prints_its_table(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "corpus_throughput.py"
    spec = importlib.util.spec_from_file_location("corpus_throughput", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--files", "4", "--min-seconds", "0.5", "--max-seconds", "0.6",
                        "--batch-seconds", "5", "--model", "untrained:gtcrn-g32"]) == 0
    out = capsys.readouterr().out
    assert "| file by file |" in out and "| batched, --batch-seconds 5 |" in out and "1.00x |" in out
    assert "load average" in out and "largest difference" in out
