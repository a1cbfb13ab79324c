"""Log-mel features, batched, with ``torch.stft`` and ``librosa.filters.mel``.

One :class:`FeatureConfig` describes the features every encoder and index uses; it is stored in
checkpoints and in ``index.json`` so that a mismatch is caught at load time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import librosa
import numpy as np
import torch


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # Hz; all audio is resampled to this on load
    n_fft: int = 512          # STFT size (periodic Hann window of the same length)
    hop_length: int = 256     # samples between frames (16 ms); 62.5 frames per second
    n_mels: int = 48          # mel bands (Slaney mel scale and norm, as librosa's default)
    fmin: float = 0.0         # lowest mel edge, Hz
    fmax: float = 8000.0      # highest mel edge, Hz (Nyquist)
    log_floor: float = 1e-10  # power floor before log10 (about -100 dB)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples (centred STFT)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_FEATURES = FeatureConfig()


@lru_cache(maxsize=8)
def _mel_basis(cfg: FeatureConfig) -> torch.Tensor:
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                             fmin=cfg.fmin, fmax=cfg.fmax)  # (n_mels, n_fft//2+1)
    return torch.from_numpy(fb.astype(np.float32))


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> torch.Tensor:
    """Periodic Hann window of ``n_fft`` samples (cached; shared by every STFT in the project)."""
    return torch.hann_window(n_fft, periodic=True)


def mel_power(wave: torch.Tensor | np.ndarray, *, cfg: FeatureConfig = DEFAULT_FEATURES) -> torch.Tensor:
    """Mel power spectrogram, matching ``librosa.feature.melspectrogram`` (centred, zero padded).

    Parameters
    ----------
    wave : array of shape (N,) or (B, N)
        Mono float audio at ``cfg.sample_rate``.
    cfg : FeatureConfig

    Returns
    -------
    torch.Tensor, float32, shape (n_mels, T) or (B, n_mels, T) with T = 1 + N // hop_length
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None]  # (1, N)
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=hann_window(cfg.n_fft),
                      center=True, pad_mode="constant", return_complex=True)  # (B, F, T)
    power = spec.real.square() + spec.imag.square()  # (B, F, T)
    mel = torch.matmul(_mel_basis(cfg), power)  # (B, n_mels, T)
    return mel[0] if squeeze else mel


def log_mel(wave: torch.Tensor | np.ndarray, *, cfg: FeatureConfig = DEFAULT_FEATURES) -> torch.Tensor:
    """Log10 mel power, ``log10(max(mel, floor))``.

    Parameters
    ----------
    wave : array of shape (N,) or (B, N)
        Mono float audio at ``cfg.sample_rate``.

    Returns
    -------
    torch.Tensor, float32, shape (n_mels, T) or (B, n_mels, T)
    """
    return torch.log10(torch.clamp(mel_power(wave, cfg=cfg), min=cfg.log_floor))
