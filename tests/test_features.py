import librosa
import numpy as np
import pytest
import torch

from data.features import DEFAULT_FEATURES, FeatureConfig, log_mel, mel_power


def _chirp(rng, seconds=2.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    y = librosa.chirp(fmin=100, fmax=6000, sr=sr, duration=seconds) * 0.5
    return (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("n", [16000, 16000 + 77, 4000])
def test_mel_power_matches_librosa(n):
    rng = np.random.default_rng(0)
    y = _chirp(rng)[:n]
    cfg = DEFAULT_FEATURES
    ref = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, power=2.0,
                                         center=True, pad_mode="constant")
    ours = mel_power(y).numpy()
    assert ours.shape == ref.shape == (48, cfg.n_frames(n))
    # relative error where there is energy (1e-4 of each band's own scale)
    rel = np.abs(ours - ref) / (np.abs(ref) + 1e-4 * ref.max())
    assert rel.max() < 1e-4


def test_batched_equals_single_and_log_floor():
    rng = np.random.default_rng(1)
    batch = np.stack([_chirp(rng), np.zeros(32000, np.float32)])
    out = log_mel(batch)
    assert out.shape == (2, 48, 126) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), log_mel(batch[0]).numpy(), rtol=1e-5, atol=1e-5)
    assert torch.all(out[1] == np.log10(DEFAULT_FEATURES.log_floor))  # silence sits on the floor


def test_config_frames_and_dict_roundtrip():
    cfg = FeatureConfig()
    assert cfg.frames_per_second == 62.5
    assert FeatureConfig(**cfg.to_dict()) == cfg
