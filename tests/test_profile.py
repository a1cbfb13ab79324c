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
    assert len(head.cfg.params) == 19 and head.cfg.voice_dim == len(NAMES) + 19  # + the frame networks' estimates
    assert len(head.frame_nets) == head.frame_cfg.folds > 1 and "frame_net_oof_r2" in ckpt["metrics"]
    assert head.cfg.timbre_sha256 == load_encoder(tiny_checkpoints / "timbre.pt").checkpoint_sha256
    assert ckpt["data"]["singers"] == 20 and "cv_ndcg@10" in ckpt["metrics"] and ckpt["train"]["command"]
    # refitting reuses the songs' cached statistics (nothing is embedded again) and gives the same head
    import encoders.embed
    import encoders.profile

    def no_embedding(*a, **k):
        raise AssertionError("songs embedded again")

    monkeypatch.setattr(encoders.embed, "embed_songs", no_embedding)
    monkeypatch.setattr(encoders.profile, "song_frames", no_embedding)  # the frames are cached too
    monkeypatch.setattr(torch.optim, "AdamW", no_embedding)  # and the frame networks are not trained again
    res = CliRunner().invoke(app, ["train", str(cat), "--encoder", "profile", "--out", str(out),
                                   "--timbre-checkpoint", str(tiny_checkpoints / "timbre.pt")])
    assert res.exit_code == 0, res.output
    again = load_encoder(out / "profile.pt")
    assert torch.equal(again.weight, head.weight) and again.frame_net_sha == head.frame_net_sha
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


# ------------------------------------------------------------------------------------------ frame network
def harmonic_tone(f0: float, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A steady tone whose harmonic h has amplitude 1/h: its harmonic envelope falls 6.02 dB per octave."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, int(7000 / f0)))
    rng = np.random.default_rng(seed)
    return (0.2 * y / np.abs(y).max() + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("f0", [150.0, 310.0])
def test_frame_features_read_the_harmonic_envelope(f0):
    from encoders.expression import analyse
    from encoders.profile import FrameNetConfig, frame_features

    cfg = FrameNetConfig(n_frames=40)
    logpow, _, voiced, _ = analyse(harmonic_tone(f0), sample_rate=SR)
    f0_hz = np.full(voiced.shape, f0)  # the f0 track is tested elsewhere (a whitened sawtooth fools it)
    x = frame_features(logpow.numpy(), f0_hz, voiced, sample_rate=SR, cfg=cfg)  # (n, 2 B + 1)
    assert x.shape == (40, cfg.in_dim) and np.isfinite(x).all()
    np.testing.assert_allclose(2 ** x[:, -1] * cfg.band_lo_hz, f0, rtol=0.01)  # log2(f0 / 100 Hz)
    centres = cfg.band_lo_hz * 2 ** ((np.arange(cfg.n_bands) + 0.5) / 12)
    inside = (centres > 1.1 * f0) & (centres < 5000)
    env = np.median(x[:, :cfg.n_bands], 0)
    slope, _ = np.polyfit(np.log2(centres[inside]), env[inside], 1)
    assert slope == pytest.approx(-6.02, abs=0.5)  # dB per octave, between the harmonics too
    assert (env[centres < 0.9 * f0] == 0).all()  # below the first harmonic: nothing to read
    # no voiced frame: an empty (0, D) array
    none = frame_features(logpow.numpy(), f0_hz, np.zeros_like(voiced), sample_rate=SR, cfg=cfg)
    assert none.shape == (0, cfg.in_dim)


def test_frame_net_ignores_padding_and_frame_order():
    from encoders.profile import FrameNet, FrameNetConfig

    cfg = FrameNetConfig(hidden=16)
    torch.manual_seed(0)
    net = FrameNet(cfg, 3).eval()
    x = torch.randn(2, 30, cfg.in_dim)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    with torch.no_grad():
        out = net(x, mask)
        x2 = x.clone()
        x2[1, 20:] = 1e3  # what padding holds does not matter
        assert torch.allclose(net(x2, mask), out, atol=1e-5)
        perm = torch.randperm(20)
        assert torch.allclose(net(x[1:, perm], mask[1:, :20]), out[1:], atol=1e-5)


def test_frame_nets_learn_a_per_frame_peak_position_out_of_fold():
    """The target is the mean position of each frame's peak, a non-linear function of the frames; the
    out-of-fold estimates come from the network that never saw the song's group."""
    from encoders.profile import FrameNetConfig, train_frame_nets

    rng = np.random.default_rng(0)
    cfg = FrameNetConfig(hidden=32, n_bands=8, n_frames=20, keep=20, epochs=30, batch=32, lr=3e-3)
    n_groups, per = 150, 2
    centre = rng.uniform(1, 6, n_groups)  # each group's own peak position on the 8-band grid
    groups = np.repeat(np.arange(n_groups), per)
    pos = centre[groups][:, None] + rng.normal(0, 0.5, (len(groups), cfg.n_frames))  # (S, n)
    bands = np.arange(cfg.n_bands)
    x = np.exp(-0.5 * (bands[None, None] - pos[..., None]) ** 2)  # (S, n, B): one peak per frame
    x = np.concatenate([x, rng.normal(0, 0.1, x.shape), np.zeros(x.shape[:2] + (1,))], axis=2).astype(np.float32)
    mask = np.ones(x.shape[:2], bool)
    y = ((centre[groups] - 3.5) / 1.45)[:, None].astype(np.float32)
    nets, oof = train_frame_nets(x, mask, y, groups, cfg=cfg, seed=0, progress=False)
    assert len(nets) == cfg.folds
    r2 = 1 - ((oof - y) ** 2).mean() / y.var()
    assert r2 > 0.8, r2


def test_frame_net_training_resumes_after_the_networks_it_saved(tmp_path):
    """A run that stopped after its first network continues from it and ends with the uninterrupted run's
    networks and estimates (the saved network's random draws are replayed); another key starts afresh."""
    from encoders.profile import FrameNetConfig, train_frame_nets

    rng = np.random.default_rng(1)
    cfg = FrameNetConfig(hidden=8, n_bands=4, n_frames=6, keep=4, epochs=2, batch=8, folds=3)
    groups = np.repeat(np.arange(24), 2)
    x = rng.normal(size=(len(groups), cfg.n_frames, cfg.in_dim)).astype(np.float32)
    mask = rng.random(x.shape[:2]) < 0.8
    y = rng.normal(size=(24, 2)).astype(np.float32)[groups]
    state = tmp_path / "nets.pt"
    nets, oof = train_frame_nets(x, mask, y, groups, cfg=cfg, progress=False, state_path=state, state_key="a")
    saved = torch.load(state, weights_only=True)
    assert len(saved["nets"]) == 3
    torch.save({"key": "a", "nets": saved["nets"][:1]}, state)  # as if killed while training the second
    again, oof2 = train_frame_nets(x, mask, y, groups, cfg=cfg, progress=False, state_path=state, state_key="a")
    np.testing.assert_array_equal(oof2, oof)
    for a, b in zip(nets, again):
        assert all(torch.equal(a.state_dict()[n], t) for n, t in b.state_dict().items())
    torch.save({"key": "a", "nets": [{**saved["nets"][0], "estimates": saved["nets"][0]["estimates"] + 1}]}, state)
    _, oof3 = train_frame_nets(x, mask, y, groups, cfg=cfg, progress=False, state_path=state, state_key="b")
    np.testing.assert_array_equal(oof3, oof)  # the saved network (with other estimates) was not used


def test_a_head_with_frame_networks_round_trips_and_embeds_them(tiny_checkpoints):
    from encoders.profile import VoiceFeatureEmbedder

    head = load_profile_head(tiny_checkpoints)
    assert head.frame_cfg is not None and len(head.frame_nets) == head.frame_cfg.folds > 1
    again = load_encoder(tiny_checkpoints / "profile.pt")
    assert again.frame_net_sha == head.frame_net_sha
    waves = [glided_notes(0.1, n=2), np.zeros(SR, np.float32)]  # a voice, and a song without voiced frames
    assert voice_features(waves[1]).shape == (len(NAMES),)  # no voiced frame: zeros of the same width
    rows = VoiceFeatureEmbedder(head=head).embed_waveforms(waves)
    stats = VoiceFeatureEmbedder().embed_waveforms(waves)
    assert rows.shape == (2, head.cfg.voice_dim) and np.array_equal(rows[:, :stats.shape[1]], stats)
    lp_frames = [voice_features(w, frames=head.frame_cfg)[1] for w in waves]
    np.testing.assert_allclose(rows[:, stats.shape[1]:], head.frame_estimates(lp_frames), rtol=1e-5, atol=1e-6)
    assert (rows[1, stats.shape[1]:] == 0).all() and np.abs(rows[0, stats.shape[1]:]).sum() > 0
    with torch.no_grad():
        head.frame_nets[0].out[-1].bias.add_(1.0)
    assert head.frame_net_sha != again.frame_net_sha  # the hash follows the weights


def test_a_head_is_fitted_on_several_catalogues_and_reads_only_the_new_one(tiny_checkpoints, tmp_path, monkeypatch):
    """Several training catalogues: their singers stay apart (same names in two catalogues are two singers), each
    catalogue's songs are cached on their own, so adding a catalogue reads only its songs."""
    import encoders.embed
    import encoders.profile
    from data.synth import synthesize_catalogue
    from encoders.train import train

    first = synthesize_catalogue(tmp_path / "a", singers=20, songs=2, seconds=3, seed=5)
    second = synthesize_catalogue(tmp_path / "b", singers=6, songs=2, seconds=3, seed=5)  # the same singer names
    timbre = tiny_checkpoints / "timbre.pt"
    train([first], tmp_path / "out", encoder="profile", timbre_checkpoint=timbre, progress=False)
    read = []
    embed_songs, song_frames = encoders.embed.embed_songs, encoders.profile.song_frames
    monkeypatch.setattr(encoders.embed, "embed_songs", lambda paths, *a, **k: read.append(paths) or
                        embed_songs(paths, *a, **k))
    monkeypatch.setattr(encoders.profile, "song_frames", lambda paths, *a, **k: read.append(paths) or
                        song_frames(paths, *a, **k))
    path = train([first, second], tmp_path / "out", encoder="profile", timbre_checkpoint=timbre,
                 progress=False)["profile"]
    assert len(read) == 2 and all(all(str(tmp_path / "b") in p for p in paths) for paths in read)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["data"]["singers"] == 26 and [c["singers"] for c in ckpt["data"]["catalogues"]] == [20, 6]
    assert ckpt["metrics"]["singers"] == 26 and ckpt["metrics"]["songs"] == 52
    names = set(np.load(tmp_path / "out" / "profile.frame_estimates.npz")["singers"])
    assert len(names) == 26 and {n.split(":")[0] for n in names} == {"1", "2"}
    assert (tmp_path / "out" / "profile.songs.2.pt").is_file() and (tmp_path / "out" / "profile.frames.2.npz").is_file()
    with pytest.raises(SingrecError, match="trains on one catalogue"):
        train([first, second], tmp_path / "t", encoder="timbre")


def test_training_songs_are_embedded_in_processes_as_in_one(tiny_checkpoints, tiny_catalogue, tmp_path):
    from data.catalogue import Catalogue
    from encoders.embed import embed_songs
    from encoders.profile import VoiceFeatureEmbedder

    timbre = load_encoder(tiny_checkpoints / "timbre.pt")
    encs = {"timbre": timbre, "voice": VoiceFeatureEmbedder(features=timbre.features)}
    paths = [str(p) for p in Catalogue.open(tiny_catalogue).songs["path"]]  # 12 songs
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    paths = [*paths[:5], str(bad), *paths[5:]]  # in the second of four chunks (two processes, batches of four)
    one, failed_one = embed_songs(paths, encs, on_error="skip", progress=False, batch_size=4)
    many, failed_many = embed_songs(paths, encs, on_error="skip", progress=False, batch_size=4, processes=2)
    assert [(f.index, f.path) for f in failed_many] == [(f.index, f.path) for f in failed_one] == [(5, str(bad))]
    for name in encs:  # the same rows in the same order (other batches: float noise at most)
        assert many[name].shape == one[name].shape == (12, encs[name].dim)
        np.testing.assert_allclose(many[name], one[name], rtol=1e-5, atol=1e-5)
    with pytest.raises(SingrecError, match="bad.flac"):
        embed_songs(paths, encs, progress=False, batch_size=4, processes=2)


def test_processes_do_not_hang_after_multithreaded_torch_in_the_parent(tiny_checkpoints, tiny_catalogue):
    """Forked workers hung in their first parallel torch op once the parent had run torch on two threads
    (libgomp's pool state is inherited without its threads); the workers are spawned now. Run in a fresh
    interpreter with SINGREC_THREADS=2 and a time limit, so that a hang fails instead of stalling the suite."""
    import os
    import subprocess
    import sys

    script = f"""
from data.catalogue import Catalogue
from encoders.checkpoint import load_encoder
from encoders.embed import embed_songs
from encoders.profile import VoiceFeatureEmbedder
timbre = load_encoder({str(tiny_checkpoints / "timbre.pt")!r})
encs = {{"timbre": timbre, "voice": VoiceFeatureEmbedder(features=timbre.features)}}
paths = [str(p) for p in Catalogue.open({str(tiny_catalogue)!r}).songs["path"]]
embed_songs(paths, encs, progress=False, batch_size=4)  # torch on two threads in this process first
many = embed_songs(paths, encs, progress=False, batch_size=4, processes=2)
print("rows", *(len(many[name]) for name in encs))
"""
    env = {**os.environ, "SINGREC_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["rows", "12", "12"]
