import numpy as np
import pytest
import soundfile as sf

from data.audio import load_audio, save_audio
from data.errors import SingrecError


def tone(sr, seconds=1.0, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.4 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("ext,fmt", [(".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")])
def test_loads_every_format_as_mono_16k(tmp_path, ext, fmt):
    stereo = np.stack([tone(44100), tone(44100, f=220.0)], axis=1)
    path = tmp_path / f"x{ext}"
    sf.write(path, stereo, 44100, format=fmt)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) < 1200  # mp3/ogg encoders add a little padding
    spec = np.abs(np.fft.rfft(y[:16000]))
    peaks = set(np.argsort(spec)[-6:])  # 1 Hz bins: both channels' tones survive the downmix
    assert any(abs(p - 440) <= 2 for p in peaks) and any(abs(p - 220) <= 2 for p in peaks)


def test_save_roundtrip_is_atomic(tmp_path):
    y = tone(16000)
    p = save_audio(tmp_path / "a" / "b.flac", y)
    np.testing.assert_allclose(load_audio(p), y, atol=1e-4)
    assert sorted(x.name for x in (tmp_path / "a").iterdir()) == ["b.flac"]  # no temp files left


@pytest.mark.parametrize("make,reason", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "cannot decode"),
    (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "silent"),
    (lambda p: sf.write(p, tone(16000, seconds=0.1), 16000), "too short"),
])
def test_bad_files_raise_with_path_and_reason(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(SingrecError, match=reason) as err:
        load_audio(p)
    assert err.value.path == str(p) and str(p) in str(err.value)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "song.aiff"
    p.write_bytes(b"x")
    with pytest.raises(SingrecError, match="unsupported audio type"):
        load_audio(p)


def test_max_seconds_reads_prefix(tmp_path):
    p = save_audio(tmp_path / "long.wav", tone(16000, seconds=3.0))
    assert len(load_audio(p, max_seconds=1.0)) == 16000
