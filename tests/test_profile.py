"""Voice profile: statistics on generated tones, the ridge head on generated data, and `train --encoder profile`."""
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES
from encoders.checkpoint import load_encoder, load_profile_head, save_checkpoint
from encoders.expression import expression_features
from encoders.profile import (VoiceFeatureConfig, VoiceProfile, aggregate, fit_profile,
                              profile_from_checkpoint, voice_feature_names, voice_features)
from tests.test_expression import SR, sung_notes

NAMES = {name: i for i, name in enumerate(voice_feature_names())}


def glided_notes(glide_s: float, *, n: int = 6, seed: int = 0) -> np.ndarray:
    """Legato phrases: two sustained notes 300 cents apart joined by a smoothstep glide of ``glide_s``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(1.2 * SR)) / SR
        g = np.clip((t - 0.6) / glide_s, 0, 1)
        cents = 300.0 * g * g * (3 - 2 * g)
        f0 = 220.0 * 2 ** ((cents + rng.normal(0, 30)) / 1200)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        out += [sum(0.8 ** h * np.sin((h + 1) * phase) for h in range(10)), np.zeros(int(0.2 * SR))]
    y = np.concatenate(out)
    return (0.3 * y / np.abs(y).max() + 1e-3 * rng.standard_normal(len(y))).astype(np.float32)


def test_features_have_names_and_start_with_the_expression_descriptors():
    wave = sung_notes(seed=3)
    f = voice_features(wave)
    assert f.shape == (len(NAMES),) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(f[:12], expression_features(wave))
    silent = voice_features(np.zeros(SR, np.float32))
    assert np.isfinite(silent).all() and np.all(silent == 0)


def test_pooled_vibrato_rate_and_glide_time_are_measured():
    for rate in (5.0, 6.5):
        f = voice_features(sung_notes(vib_rate=rate, vib_depth=50.0, seconds=2.0, n_notes=5))
        assert f[NAMES["vibrato_peak_hz"]] == pytest.approx(rate, abs=0.15)
        assert f[NAMES["vibrato_acf_hz"]] == pytest.approx(rate, abs=0.3)
    fast, slow = (voice_features(glided_notes(g)) for g in (0.08, 0.2))
    # a smoothstep glide's peak slope is 1.5 x interval / glide time: interval / peak slope (in 10 ms frames)
    # reads glide / 1.5
    assert slow[NAMES["glide_interval_per_slope"]] == pytest.approx(20 / 1.5, rel=0.15)
    assert fast[NAMES["glide_interval_per_slope"]] == pytest.approx(8 / 1.5, rel=0.15)
    assert fast[NAMES["glide_interval_cents"]] == pytest.approx(300, rel=0.05)
    assert fast[NAMES["glides_per_note"]] == 1.0


def test_long_songs_are_read_from_their_middle():
    cfg = VoiceFeatureConfig(max_seconds=6.0)
    wave = np.concatenate([sung_notes(seed=s) for s in range(3)])  # ~20 s
    start = (len(wave) - 6 * SR) // 2
    np.testing.assert_array_equal(voice_features(wave, cfg=cfg), voice_features(wave[start:start + 6 * SR], cfg=cfg))


def test_aggregate_takes_median_and_mean_per_group_in_first_seen_order():
    voice = np.array([[1.0], [2.0], [9.0], [5.0]])
    timbre = np.array([[0.0], [0.0], [3.0], [1.0]])
    x, labels = aggregate(voice, timbre, ["b", "b", "b", "a"])
    assert labels == ["b", "a"]
    np.testing.assert_allclose(x, [[2.0, 0.0, 4.0, 1.0], [5.0, 1.0, 5.0, 1.0]])
    x, labels = aggregate(voice, timbre)
    np.testing.assert_allclose(x[:, :2], x[:, 2:])  # each song on its own: median = mean
    assert labels == [0, 1, 2, 3]


def _generated_singers(n_singers=60, songs=4, d_voice=6, d_timbre=4, seed=0):
    """Songs whose statistics are a singer's hidden parameters seen through a fixed linear map plus noise."""
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((n_singers, 3))
    mix = np.random.default_rng(123).standard_normal((3, d_voice + d_timbre))  # the same for every seed
    rows = np.repeat(np.arange(n_singers), songs)
    x = params[rows] @ mix + 0.3 * rng.standard_normal((len(rows), d_voice + d_timbre))
    names = [f"s{i:03d}" for i in range(n_singers)]
    truth = pd.DataFrame({"singer": names, "p_a": params[:, 0], "p_b": 10 + 5 * params[:, 1],
                          "p_c": params[:, 2]})
    return x[:, :d_voice], x[:, d_voice:], [names[r] for r in rows], truth


def test_fit_recovers_parameters_and_the_checkpoint_round_trips(tmp_path):
    voice, timbre, singers, truth = _generated_singers()
    head, metrics = fit_profile(voice, timbre, singers, truth)
    assert head.cfg.params == ("a", "b", "c") and head.dim == 3
    assert metrics["cv_r2_mean"] > 0.9 and metrics["cv_ndcg@10"] > 0.6 and metrics["singers"] == 60
    # new singers from the same process: estimates in the parameters' units
    v2, t2, s2, truth2 = _generated_singers(seed=1)
    est = head.in_units(head.predict(v2, t2, groups=s2))  # (S, 3), singers in first-seen order
    y = truth2[["p_a", "p_b", "p_c"]].to_numpy()
    r2 = 1 - ((est - y) ** 2).mean(0) / y.var(0)
    assert (r2 > 0.9).all(), r2
    path = save_checkpoint(tmp_path / "profile.pt", kind="profile", model=head, config=asdict(head.cfg),
                           features=DEFAULT_FEATURES, metrics=metrics)
    back = load_encoder(path, kind="profile")
    np.testing.assert_array_equal(back.predict(v2, t2, groups=s2), head.predict(v2, t2, groups=s2))
    assert back.metrics["cv_r2"]["b"] == pytest.approx(metrics["cv_r2"]["b"])
    with pytest.raises(SingrecError, match="expects 6 voice features"):
        back.predict(v2[:, :5], t2)


def test_the_kernel_part_learns_what_a_linear_map_cannot():
    """A parameter that is a non-linear function of the statistics (here |s|): the kernel part recovers it, the
    linear part cannot, and the head's held-out R^2 says so."""
    rng = np.random.default_rng(0)
    s = rng.uniform(-2, 2, 200)
    rows = np.repeat(np.arange(200), 3)
    voice = np.stack([s[rows], rng.standard_normal(600)], 1) + 0.05 * rng.standard_normal((600, 2))
    names = [f"s{i:03d}" for i in range(200)]
    truth = pd.DataFrame({"singer": names, "p_a": np.abs(s), "p_b": s})
    head, metrics = fit_profile(voice, np.zeros((600, 0)), [names[r] for r in rows], truth)
    assert head.cfg.kernel_landmarks == 200 and head.landmarks.shape == (200, 4)
    # |s| is invisible to a linear map (R^2 ~0 for "a"); the mix of both parts, half kernel, gets most of it
    assert metrics["cv_r2"]["a"] > 0.6 and metrics["cv_r2_mean"] > metrics["cv_r2_mean_linear"] + 0.15, metrics
    # a head saved before the kernel part existed (no kernel settings, no kernel buffers) loads as a linear head
    cfg = {k: v for k, v in asdict(head.cfg).items() if not k.startswith("kernel_")}
    state = {k: v for k, v in head.state_dict().items() if k not in ("landmarks", "k_weight", "k_bias")}
    old = profile_from_checkpoint({"config": cfg, "state_dict": state})
    assert old.cfg.kernel_landmarks == 0 and old.landmarks.shape == (0, 4)
    x = voice[:6]
    linear = ((torch.from_numpy(aggregate(x, np.zeros((6, 0)))[0]) - head.x_mean) / head.x_scale).clamp(-6, 6)
    np.testing.assert_allclose(old.predict(x, np.zeros((6, 0))), (linear @ head.weight.T + head.bias).numpy())


def test_fit_refuses_unknown_singers_and_too_few(tmp_path):
    voice, timbre, singers, truth = _generated_singers()
    with pytest.raises(SingrecError, match="no ground-truth parameters"):
        fit_profile(voice, timbre, singers, truth.iloc[1:])
    with pytest.raises(SingrecError, match="too few singers"):
        fit_profile(voice[:40], timbre[:40], singers[:40], truth)


def test_a_head_fitted_on_another_timbre_encoder_is_not_used(tiny_checkpoints, tiny_encoders, tiny_catalogue,
                                                             tmp_path):
    import shutil

    assert load_profile_head(tiny_checkpoints, tiny_encoders["timbre"]) is not None
    other = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints, other)
    head = load_encoder(other / "profile.pt", kind="profile")
    cfg = replace(head.cfg, timbre_sha256="0" * 64)
    moved = VoiceProfile(cfg)
    moved.load_state_dict(head.state_dict())
    save_checkpoint(other / "profile.pt", kind="profile", model=moved, config=asdict(cfg),
                    features=tiny_encoders["timbre"].features)
    assert load_profile_head(other, tiny_encoders["timbre"]) is None
    # given explicitly, such a head is refused by the index build
    from index.build import build_catalogue_index

    with pytest.raises(SingrecError, match="fitted on another timbre encoder"):
        build_catalogue_index(tiny_catalogue, tmp_path / "idx", progress=False,
                              encoders={**tiny_encoders, "profile": load_encoder(other / "profile.pt")})


def test_train_command_fits_a_head_on_a_synthetic_catalogue(tiny_checkpoints, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from data.synth import synthesize_catalogue
    from recsys.cli import app

    cat = synthesize_catalogue(tmp_path / "cat", singers=20, songs=2, seconds=3, seed=5)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["train", str(cat), "--encoder", "profile", "--out", str(out),
                                   "--timbre-checkpoint", str(tiny_checkpoints / "timbre.pt")])
    assert res.exit_code == 0, res.output
    head = load_encoder(out / "profile.pt", kind="profile")
    ckpt = torch.load(out / "profile.pt", weights_only=True)
    assert len(head.cfg.params) == 19 and head.cfg.voice_dim == len(NAMES)
    assert head.cfg.timbre_sha256 == load_encoder(tiny_checkpoints / "timbre.pt").checkpoint_sha256
    assert ckpt["data"]["singers"] == 20 and "cv_ndcg@10" in ckpt["metrics"] and ckpt["train"]["command"]
    # refitting reuses the songs' cached statistics (nothing is embedded again) and gives the same head
    import encoders.embed

    def no_embedding(*a, **k):
        raise AssertionError("songs embedded again")

    monkeypatch.setattr(encoders.embed, "embed_songs", no_embedding)
    res = CliRunner().invoke(app, ["train", str(cat), "--encoder", "profile", "--out", str(out),
                                   "--timbre-checkpoint", str(tiny_checkpoints / "timbre.pt")])
    assert res.exit_code == 0, res.output
    assert torch.equal(load_encoder(out / "profile.pt").weight, head.weight)
    # a catalogue without ground truth is refused with the reason
    (tmp_path / "cat" / "ground_truth" / "singers.csv").unlink()
    res = CliRunner().invoke(app, ["train", str(cat), "--encoder", "profile", "--out", str(out)])
    assert res.exit_code != 0 and "ground_truth/singers.csv" in res.output


def test_flat_notes_and_odd_songs_stay_bounded():
    """Regression: a note without any pitch movement once divided by ~0 (vibrato build-up 5e5), and one such
    song made its singer's profile 26,000 standard deviations wide, flattening every profile score to ~1."""
    from encoders.profile import _contour_features

    cents = np.full(300, 1200.0)  # one 3-s note whose f0 track does not move at all after its onset
    cents[:40] += 20 * np.sin(2 * np.pi * 6 * np.arange(40) / 100)  # a wobble at the onset only
    f = _contour_features(cents, np.ones(300, bool), 100.0, VoiceFeatureConfig())
    build = f[5:12]  # vibrato build-up: spread in the first 0.7 s relative to the rest
    assert np.isfinite(f).all() and build.max() < 50, build
    voice, timbre, singers, truth = _generated_singers()
    head, _ = fit_profile(voice, timbre, singers, truth)
    odd, odder = voice[:1].copy(), voice[:1].copy()
    odd[0, 0], odder[0, 0] = 1e6, 1e9  # far outside anything seen in training: both clipped to the same input
    assert (1e6 - head.x_mean[0].item()) / head.x_scale[0].item() > head.cfg.clip
    np.testing.assert_allclose(head.predict(odd, timbre[:1]), head.predict(odder, timbre[:1]))
    assert np.abs(head.predict(odd, timbre[:1])).max() < 10
