import librosa
import numpy as np
import pytest
import torch

from data.augment import pitch_shift, pitch_shift_batch, resample_to_length, time_stretch, time_stretch_batch
from data.errors import SingrecError

SR = 16000


def harmonic_tone(f0, seconds=2.0, n_harm=5):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * sum(0.5 ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(n_harm))).astype(np.float32)


def f0_of(y):
    f = librosa.yin(y, fmin=60, fmax=1200, sr=SR, frame_length=2048)
    return float(np.median(f[5:-5]))


@pytest.mark.parametrize("f0", [110.0, 261.6, 440.0])
@pytest.mark.parametrize("n_steps", [-3, -1, 2, 3])
def test_pitch_shift_moves_f0_by_semitones(f0, n_steps):
    y = harmonic_tone(f0)
    out = pitch_shift(y, sr=SR, n_steps=n_steps)
    assert out.shape == y.shape and out.dtype == np.float32
    assert f0_of(out) == pytest.approx(f0 * 2 ** (n_steps / 12), rel=0.01)


@pytest.mark.parametrize("rate", [0.7, 0.85, 1.2, 1.4])
def test_time_stretch_changes_duration_keeps_f0(rate):
    y = harmonic_tone(220.0)
    out = time_stretch(y, rate=rate)
    assert len(out) == round(len(y) / rate)
    assert f0_of(out) == pytest.approx(220.0, rel=0.01)
    # energy is kept (no silent gaps or blow-ups): rms within 10 %
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(y ** 2)), rel=0.1)


def test_batched_matches_per_item_and_fixed_length():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(np.stack([harmonic_tone(f) for f in (150.0, 300.0, 500.0)]))
    x = x + 0.01 * torch.as_tensor(rng.standard_normal(x.shape), dtype=torch.float32)
    shifted = pitch_shift_batch(x, [2.0, 0.0, -1.5])
    assert shifted.shape == x.shape
    torch.testing.assert_close(shifted[1], x[1])  # zero shift is identity
    np.testing.assert_allclose(shifted[2].numpy(), pitch_shift(x[2].numpy(), n_steps=-1.5), atol=1e-5)
    stretched = time_stretch_batch(x, [0.8, 1.0, 1.25], length=30000)
    assert stretched.shape == (3, 30000)
    assert torch.all(stretched[2, 25600:] == 0)  # shorter output is zero-padded
    var = time_stretch_batch(x[:2], [0.8, 1.25])
    assert [len(v) for v in var] == [40000, 25600]


def test_resample_is_band_limited():
    # a 7 kHz tone shrunk to half the samples would alias to 1 kHz; the resampler must remove it
    t = np.arange(SR) / SR
    y = torch.as_tensor(np.sin(2 * np.pi * 7000 * t) + np.sin(2 * np.pi * 1000 * t), dtype=torch.float32)
    half = resample_to_length(y, SR // 2).numpy()  # now 8 kHz sample rate, Nyquist 4 kHz
    spec = np.abs(np.fft.rfft(half))
    assert spec[1000] > 100 * spec[np.r_[0:900, 1100:4001]].max()


def test_bad_shapes_are_clear_errors():
    with pytest.raises(SingrecError, match="shape"):
        pitch_shift_batch(torch.zeros(10), [1])
    with pytest.raises(SingrecError, match="positive rates"):
        time_stretch_batch(torch.zeros(1, 4000), [0.0])
