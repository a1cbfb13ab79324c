"""embed_songs: one load per song feeds every encoder; batching; errors raised or skipped and reported; the same
rows from several processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.audio import load_audio
from data.catalogue import Catalogue
from data.errors import SingrecError
from data.features import DEFAULT_FEATURES
from encoders.embed import Failure, embed_songs
from encoders.timbre import TimbreConfig, TimbreEncoder, TimbreNet


class WaveStats:
    """A stand-in waveform embedder (like the melody encoder, ``input_kind == "waveform"``)."""

    name = "melody"
    input_kind = "waveform"
    dim = 3
    features = DEFAULT_FEATURES

    def __init__(self):
        self.calls = 0

    def embed_waveforms(self, waves):
        self.calls += 1
        out = np.array([[np.abs(w).mean(), w.std(), len(w) / 16000] for w in waves], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_logmels(self, mels):  # pragma: no cover - must not be called
        raise AssertionError("waveform embedders get waveforms")


@pytest.fixture(scope="module")
def timbre():
    """A small fused timbre encoder (the speaker branch reads waveforms, as the shipped one)."""
    torch.manual_seed(0)
    return TimbreEncoder(TimbreNet(TimbreConfig(channels=16, stat_channels=32, emb_dim=24, dilations=(1,))))


@pytest.fixture(scope="module")
def paths(tiny_catalogue):
    return Catalogue.open(tiny_catalogue).songs["path"].tolist()


def test_two_encoders_give_a_tuple_in_input_order(timbre, paths):
    melody = WaveStats()
    t, m = embed_songs(paths, {"timbre": timbre, "melody": melody}, batch_size=5, progress=False)
    assert t.shape == (12, 256 + 24) and m.shape == (12, 3) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert melody.calls == 3  # batches of 5, 5, 2
    waves = [load_audio(p) for p in paths]
    assert np.allclose(t, timbre.embed_waveforms(waves), atol=1e-5)
    assert np.allclose(m, melody.embed_waveforms(waves), atol=1e-6)
    # waveforms in, the same vectors out; batching and worker threads change nothing
    t2, m2 = embed_songs(waves, [timbre, melody], batch_size=1, workers=0, progress=False)
    assert np.allclose(t, t2, atol=1e-5) and np.allclose(m, m2, atol=1e-6)


def test_other_encoder_sets_give_a_dict(timbre, paths):
    out = embed_songs(paths[:3], [timbre], progress=False)
    assert set(out) == {"timbre"} and out["timbre"].shape == (3, 256 + 24)
    out = embed_songs(paths[:2], {"a": timbre, "b": WaveStats()}, progress=False)
    assert set(out) == {"a", "b"}
    with pytest.raises(SingrecError, match="no encoders"):
        embed_songs(paths, {}, progress=False)


def test_unreadable_file_raises_or_is_skipped_and_reported(timbre, paths, tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"definitely not flac")
    missing = tmp_path / "missing.wav"
    songs = [paths[0], bad, paths[1], missing, np.zeros(16000, np.float32)]
    with pytest.raises(SingrecError, match="broken.flac"):
        embed_songs(songs, {"timbre": timbre, "melody": WaveStats()}, progress=False)
    t, m, failures = embed_songs(songs, {"timbre": timbre, "melody": WaveStats()}, progress=False,
                                 on_error="skip")
    assert t.shape == (2, 256 + 24) and m.shape == (2, 3)
    assert [f.index for f in failures] == [1, 3, 4] and all(isinstance(f, Failure) for f in failures)
    assert failures[0].path == str(bad) and "decode" in failures[0].reason
    assert "not found" in failures[1].reason and "silent" in failures[2].reason
    good = embed_songs([paths[0], paths[1]], [timbre], progress=False)["timbre"]
    assert np.allclose(t, good, atol=1e-5)
    out, failures = embed_songs([bad], [timbre], progress=False, on_error="skip")
    assert out["timbre"].shape == (0, 256 + 24) and len(failures) == 1


def test_encoders_must_share_features(timbre, paths):
    other = WaveStats()
    other.features = DEFAULT_FEATURES.__class__(n_mels=64)
    with pytest.raises(SingrecError, match="disagree on features"):
        embed_songs(paths[:1], {"timbre": timbre, "melody": other}, progress=False)


def test_processes_give_the_rows_of_one_process(tiny_checkpoints, tiny_catalogue, tmp_path):
    from encoders.checkpoint import load_encoder

    # the melody encoder's weight-normalised convs reach the spawned processes through their state_dict
    encs = {k: load_encoder(tiny_checkpoints / f"{k}.pt") for k in ("timbre", "melody")}
    paths = [str(p) for p in Catalogue.open(tiny_catalogue).songs["path"]]  # 12 songs
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    paths = [*paths[:5], str(bad), *paths[5:]]  # in the second of four chunks (two processes, batches of four)
    *one, failed_one = embed_songs(paths, encs, on_error="skip", progress=False, batch_size=4)
    *many, failed_many = embed_songs(paths, encs, on_error="skip", progress=False, batch_size=4, processes=2)
    assert [(f.index, f.path) for f in failed_many] == [(f.index, f.path) for f in failed_one] == [(5, str(bad))]
    # the same rows in the same order (other batches: float noise at most)
    for k, a, b in zip(("timbre", "melody"), many, one):
        assert a.shape == b.shape == (12, encs[k].dim)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(SingrecError, match="bad.flac"):
        embed_songs(paths, encs, progress=False, batch_size=4, processes=2)


def test_processes_do_not_hang_after_multithreaded_torch_in_the_parent(tiny_checkpoints, tiny_catalogue):
    """Forked workers hang in their first parallel torch op once the parent has run torch on two threads
    (libgomp's pool state is inherited without its threads), so the workers are spawned. Run in a fresh
    interpreter with SINGREC_THREADS=2 and a time limit, so that a hang fails instead of stalling the suite."""
    import os
    import subprocess
    import sys

    script = f"""
from data.catalogue import Catalogue
from encoders.checkpoint import load_encoder
from encoders.embed import embed_songs
encs = {{"timbre": load_encoder({str(tiny_checkpoints / "timbre.pt")!r})}}
paths = [str(p) for p in Catalogue.open({str(tiny_catalogue)!r}).songs["path"]]
embed_songs(paths, encs, progress=False, batch_size=4)  # torch on two threads in this process first
many = embed_songs(paths, encs, progress=False, batch_size=4, processes=2)
print("rows", len(many["timbre"]))
"""
    env = {**os.environ, "SINGREC_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["rows", "12"]
