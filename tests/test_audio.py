"""gtcrn.audio: reading that names the file and the problem (truncated, empty, odd names)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gtcrn.audio import AudioError, header_frames, read_audio, write_audio


def tone(n: int, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / 16000
    return np.stack([0.3 * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(channels)], axis=1)


def cut(path: Path, keep: int) -> None:
    """Keep the first ``keep`` bytes of a file, as ``head -c`` would."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("fmt,subtype,channels,bytes_per_frame", [
    ("WAV", "PCM_16", 1, 2), ("WAV", "FLOAT", 2, 8), ("WAV", "PCM_24", 3, 9), ("AIFF", "PCM_16", 2, 4)])
def test_a_truncated_file_is_an_error_naming_both_counts(tmp_path, fmt, subtype, channels, bytes_per_frame):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), tone(16000, channels), 16000, subtype=subtype, format=fmt)
    with open(path, "rb") as fh:
        assert header_frames(fh) == 16000  # a complete file: the header's count is the file's
    size = path.stat().st_size
    data_start = size - 16000 * bytes_per_frame  # every header here ends where the samples start
    keep = data_start + 5000 * bytes_per_frame + 1  # 5000 whole frames and a stray byte
    cut(path, keep)
    with pytest.raises(AudioError) as info:
        read_audio(path)
    assert str(info.value) == f"{path}: truncated: header says 16000 frames, file holds 5000"


def test_header_frames_is_silent_where_the_header_does_not_say(tmp_path):
    sf.write(str(tmp_path / "x.flac"), tone(1000), 16000)
    sf.write(str(tmp_path / "x.wav"), tone(1000), 16000, subtype="PCM_16")
    streamed = bytearray((tmp_path / "x.wav").read_bytes())
    at = streamed.index(b"data") + 4
    streamed[at:at + 4] = b"\xff\xff\xff\xff"  # a WAV written to a pipe: the size never filled in
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    for name in ("x.flac", "streamed.wav"):
        with open(tmp_path / name, "rb") as fh:
            assert header_frames(fh) is None
    (tmp_path / "short").write_bytes(b"RIFF")
    with open(tmp_path / "short", "rb") as fh:
        assert header_frames(fh) is None


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)$"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"nope\.wav: no such file$"):
        read_audio(tmp_path / "nope.wav")


def test_a_name_that_is_not_utf8_reads_and_writes(tmp_path):
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 on a UTF-8 system: a surrogate escape in Python
    x = tone(3000).T.astype(np.float32)  # (1, N)
    write_audio(tmp_path / name, x, 16000, "PCM_16")
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xe9.wav"]
    audio, sr, subtype = read_audio(tmp_path / name)
    assert (audio.shape, sr, subtype) == ((1, 3000), 16000, "PCM_16")
    np.testing.assert_allclose(audio, x, atol=1 / 32768)


def test_without_the_peak_chunk_a_float_file_holds_no_time_of_writing(tmp_path):
    from gtcrn.audio import without_peak_chunk

    x = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    for ext in ("wav", "aiff"):
        stamped, plain = tmp_path / f"stamped.{ext}", tmp_path / f"plain.{ext}"
        sf.write(str(stamped), x, 16000, subtype="FLOAT")
        assert b"PEAK" in stamped.read_bytes()  # libsndfile's default: a PEAK chunk with a time stamp
        with without_peak_chunk(sf.SoundFile(str(plain), "w", 16000, 1, subtype="FLOAT")) as fh:
            fh.write(x)
        assert b"PEAK" not in plain.read_bytes()
        np.testing.assert_array_equal(sf.read(str(plain), dtype="float32")[0], x)
