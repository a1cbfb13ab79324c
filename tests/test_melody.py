"""Melody encoder: causality, receptive field, shapes, transposition invariance, training, checkpoints, resume."""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from data.errors import SingrecError
from encoders.base import retrieval_metrics
from encoders.checkpoint import load_encoder, save_checkpoint
from encoders.melody import (TCAE, Chomp1d, MelodyConfig, MelodyEncoder, interval_features, melody_input,
                             pitch_distribution, pitch_salience, receptive_field, train_melody)

SR = 16000
SMALL = dict(channels=16, latent_dim=8, embed_dim=12, n_layers=7, dec_layers=1)  # fast model, same structure


def tone_melody(midis, beats, *, bpm=120.0, seed=0, n_harm=10, formant_hz=900.0, noise=0.002) -> np.ndarray:
    """A sung-like harmonic tone melody: notes (MIDI) with durations in beats, vibrato, a formant, noise."""
    rng = np.random.default_rng(seed)
    f0 = np.concatenate([np.full(int(b * 60 / bpm * SR), 440.0 * 2 ** ((m - 69) / 12)) for m, b in zip(midis, beats)])
    t = np.arange(f0.size) / SR
    f0 = f0 * 2 ** (0.25 / 12 * np.sin(2 * np.pi * 5.5 * t))  # vibrato +-25 cents
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = np.zeros_like(f0)
    for h in range(1, n_harm + 1):
        amp = h ** -0.8 * (1 + 2 * np.exp(-(((h * f0) - formant_hz) / 300) ** 2))
        y += amp * np.sin(h * phase) * (h * f0 < SR / 2 - 500)
    edges = np.cumsum([0] + [int(b * 60 / bpm * SR) for b in beats])
    env = np.ones_like(y)
    for a in edges[1:-1]:  # short dips between notes (articulation)
        env[max(0, a - 240):a + 240] = np.abs(np.linspace(-1, 1, min(a + 240, y.size) - max(0, a - 240)))
    y = 0.3 * y * env / np.abs(y).max() + noise * rng.standard_normal(y.size)
    return y.astype(np.float32)


def random_tune(seed, n=16):
    rng = np.random.default_rng(seed)
    midis = 60 + np.clip(np.cumsum(rng.choice([-4, -2, -1, 0, 1, 2, 3, 5], n)), -7, 12)
    beats = rng.choice([0.5, 1.0, 1.5], n)
    return midis, beats


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models on a shared 2-core machine: one intra-op thread avoids waiting on a busy second core."""
    monkeypatch.setenv("SINGREC_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def small_model(**kw) -> TCAE:
    torch.manual_seed(0)
    return TCAE(MelodyConfig(**{**SMALL, **kw})).eval()


# ------------------------------------------------------------------------------------------- causality
def _changed_after(x: torch.Tensor, t: int, seed: int = 1) -> torch.Tensor:
    x2 = x.clone()
    x2[..., t + 1:] = torch.rand(x2[..., t + 1:].shape, generator=torch.Generator().manual_seed(seed))
    return x2


def test_encoder_latent_is_causal():
    model = small_model()
    x = torch.rand(2, model.cfg.in_channels, 300, generator=torch.Generator().manual_seed(0))
    t = 180
    with torch.no_grad():
        z1, z2 = model.encode(x), model.encode(_changed_after(x, t))
    assert torch.equal(z1[..., : t + 1], z2[..., : t + 1])  # nothing before or at t moved, bit for bit
    assert not torch.allclose(z1[..., t + 1:], z2[..., t + 1:])  # ... while the future did (test is not vacuous)


def test_noncausal_padding_would_break_the_causality_check(monkeypatch):
    """The check above can fail: crop the padding symmetrically (a centred conv) and frame t sees the future."""
    model = small_model()
    x = torch.rand(1, model.cfg.in_channels, 300, generator=torch.Generator().manual_seed(0))
    t = 180

    def centred(self, y):  # drop half the padding on each side instead of all of it on the right
        left = self.chomp // 2
        return y[:, :, left: y.shape[-1] - (self.chomp - left)]

    monkeypatch.setattr(Chomp1d, "forward", centred)
    with torch.no_grad():
        z1, z2 = model.encode(x), model.encode(_changed_after(x, t))
    assert not torch.allclose(z1[..., : t + 1], z2[..., : t + 1])


def test_input_representation_is_causal():
    cfg = MelodyConfig()
    y = tone_melody(*random_tune(0))
    q, v = pitch_distribution(pitch_salience(torch.from_numpy(y)[None], cfg), cfg)  # (1, P, T), (1, 1, T)
    t = q.shape[-1] // 2
    q2, v2 = _changed_after(q, t), _changed_after(v, t)
    a, b = interval_features(q, v, cfg), interval_features(q2, v2, cfg)
    assert torch.allclose(a[..., : t + 1], b[..., : t + 1], atol=1e-6)
    assert not torch.allclose(a[..., t + 1:], b[..., t + 1:], atol=1e-3)


def test_receptive_field_matches_config():
    cfg = MelodyConfig(**SMALL)
    rf = receptive_field(cfg.n_layers, cfg.kernel_size)
    assert rf == 509  # 1 + 2 (k - 1)(2^L - 1) with k = 3, L = 7
    model = small_model().double()
    n_t = rf + 40
    t = n_t - 5
    x = torch.rand(1, cfg.in_channels, n_t, dtype=torch.float64, requires_grad=True)
    model.encode(x)[..., t].sum().backward()
    reach = x.grad.abs().sum(dim=1)[0]  # (T,) influence of each input frame on latent frame t
    assert reach[t - rf + 1] > 0 and reach[t] > 0  # oldest and newest frame in the field count
    assert torch.all(reach[: t - rf + 1] == 0)  # older frames do not
    assert torch.all(reach[t + 1:] == 0)  # nor does the future
    assert model.receptive_field == rf


# ------------------------------------------------------------------------------------------------ shapes
def test_shapes_and_pooling():
    model = small_model()
    cfg = model.cfg
    x = torch.rand(3, cfg.in_channels, 50)
    with torch.no_grad():
        recon, z = model(x)
        emb = model.pool(z, torch.tensor([50, 30, 10]))
    assert recon.shape == x.shape and z.shape == (3, cfg.latent_dim, 50)
    assert emb.shape == (3, cfg.embed_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    y = tone_melody(*random_tune(1))
    inp = melody_input(y, cfg)
    assert inp.shape == (cfg.in_channels, math.ceil((1 + y.size // cfg.hop_length) / cfg.time_pool))


def test_encoder_embeddings_do_not_depend_on_batching():
    enc = MelodyEncoder(small_model(), batch_frames=10_000)
    waves = [tone_melody(*random_tune(s), bpm=100 + 10 * s) for s in range(3)] + [tone_melody(*random_tune(3))[:8000]]
    together = enc.embed_waveforms(waves)
    alone = np.concatenate([enc.embed_waveforms([w]) for w in waves])
    assert together.shape == (4, enc.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # right padding cannot leak into a causal latent
    with pytest.raises(SingrecError, match="waveform"):
        enc.embed_logmels([torch.zeros(48, 100)])


# ---------------------------------------------------------------------------------- transposition invariance
def test_input_is_transposition_invariant():
    cfg = MelodyConfig()
    midis, beats = random_tune(2)
    base = melody_input(tone_melody(midis, beats, seed=0), cfg)
    up3 = melody_input(tone_melody(midis + 3, beats, seed=1, formant_hz=1200.0), cfg)  # other key and vowel
    other = melody_input(tone_melody(*random_tune(7), seed=2), cfg)
    n = min(x.shape[1] for x in (base, up3, other))
    base, up3, other = base[:, :n], up3[:, :n], other[:, :n]
    rel = lambda a, b: float((a - b).norm() / a.norm())  # noqa: E731
    print(f"relative change: +3 semitones {rel(base, up3):.3f}, another tune {rel(base, other):.3f}")
    assert rel(base, up3) < 0.15
    assert rel(base, other) > 3 * rel(base, up3)
    pooled = lambda x: torch.cat([x.mean(1), x.std(1)])  # noqa: E731  the raw pooled input (ablation vector)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    assert cos(pooled(base), pooled(up3)) > 0.99


def test_retrieval_metrics():
    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]] + 0.01 * np.arange(4)[:, None]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    m = retrieval_metrics(emb, ["a", "a", "b", "b"])
    assert m["map"] == 1.0 and m["top1"] == 1.0 and m["queries"] == 4
    assert math.isnan(retrieval_metrics(emb, ["a", "a", "b", "b"], exclude_groups=[0, 0, 1, 1])["map"])


# --------------------------------------------------------------------------------------- training & files
@pytest.fixture(scope="module")
def tiny_songs(tmp_path_factory) -> pd.DataFrame:
    """8 songs: 4 tunes, each sung in two keys and tempos with different timbres; 4 singers."""
    root = tmp_path_factory.mktemp("tiny_melody")
    rows = []
    for tune in range(4):
        midis, beats = random_tune(10 + tune, n=12)
        for j, (shift, bpm) in enumerate(((0, 120.0), (4, 105.0))):
            y = tone_melody(midis + shift, beats, bpm=bpm, seed=tune * 2 + j, formant_hz=700.0 + 300 * j)
            path = root / f"s{(tune + j) % 4}" / f"t{tune}-{j}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, y, SR)
            rows.append({"path": str(path), "singer": f"s{(tune + j) % 4}", "melody_id": f"m{tune}",
                         "song_id": f"s{(tune + j) % 4}/t{tune}-{j}"})
    return pd.DataFrame(rows)


TRAIN = dict(batch_size=4, seed=0, val_fraction=0.25, crop_seconds=2.0, lags=(4, 8, 16, 32), **SMALL)


def test_tiny_training_lowers_recon_and_checkpoint_round_trips(tiny_songs, tmp_path):
    out = train_melody(tiny_songs, tmp_path, epochs=6, resume=False, lr=5e-3, **TRAIN)
    assert out == tmp_path / "melody.pt" and out.is_file()
    enc = load_encoder(out, kind="melody")
    hist = enc.metrics and torch.load(out, weights_only=True)["train"]["history"]
    assert hist[-1]["train_recon"] < 0.7 * hist[0]["train_recon"]
    assert hist[-1]["val_recon_mse"] < hist[0]["val_recon_mse"]
    for key in ("val_recon_mse", "val_melody_map", "val_singer_top1"):
        assert key in enc.metrics
    ckpt = torch.load(out, weights_only=True)
    assert tuple(ckpt["config"]["lags"]) == (4, 8, 16, 32)
    assert ckpt["data"]["songs"] == 8 and ckpt["data"]["melodies"] == 4
    # identical embeddings after a save / load round trip
    waves = [tone_melody(*random_tune(s)) for s in range(3)]
    save_checkpoint(tmp_path / "again.pt", kind="melody", model=enc.model, config=asdict(enc.cfg),
                    features=enc.features)
    again = load_encoder(tmp_path / "again.pt")
    np.testing.assert_array_equal(enc.embed_waveforms(waves), again.embed_waveforms(waves))
    assert again.dim == SMALL["embed_dim"] and again.name == "melody"


def test_resume_continues_where_it_stopped(tiny_songs, tmp_path):
    full = train_melody(tiny_songs, tmp_path / "full", epochs=3, resume=False, **TRAIN)

    class Stop(Exception):
        pass

    def crash(epoch, metrics):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_melody(tiny_songs, tmp_path / "cut", epochs=3, resume=False, callback=crash, **TRAIN)
    assert torch.load(tmp_path / "cut" / "melody.pt", weights_only=True)["train"]["epochs_done"] == 2
    seen = []
    cut = train_melody(tiny_songs, tmp_path / "cut", epochs=3, resume=True,
                       callback=lambda e, m: seen.append(e), **TRAIN)
    assert seen == [3]  # only the missing epoch ran
    a, b = torch.load(full, weights_only=True), torch.load(cut, weights_only=True)
    assert b["train"]["epochs_done"] == 3 and len(b["train"]["history"]) == 3
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-4, atol=1e-5)
    # a finished run resumes to a no-op; another config does not resume
    seen.clear()
    train_melody(tiny_songs, tmp_path / "cut", epochs=3, resume=True, callback=lambda e, m: seen.append(e), **TRAIN)
    assert seen == []
    with pytest.raises(SingrecError, match="unknown melody config"):
        train_melody(tiny_songs, tmp_path / "x", epochs=1, not_an_option=1)
