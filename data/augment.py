"""Pitch shift and time stretch, batched in torch (phase vocoder + FFT resampling).

Training makes pitch-shifted and time-stretched views of thousands of crops per epoch, so these run in
torch on whole batches. torchaudio (which has ``phase_vocoder`` and ``resample``) cannot be installed with
the CPU torch used here, so the two small kernels are written out below, following torchaudio's and
librosa's definitions: ``time_stretch`` with ``rate > 1`` is faster (shorter), ``pitch_shift`` by
``n_steps`` semitones multiplies every frequency by ``2 ** (n_steps / 12)`` and keeps the length.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from data.errors import SingrecError
from data.features import hann_window

N_FFT = 512   # analysis frame for the phase vocoder (32 ms at 16 kHz)
HOP = 128     # 75 % overlap keeps phase-vocoder smearing low


def phase_vocoder(spec: torch.Tensor, *, rate: float, hop_length: int) -> torch.Tensor:
    """Time-scale a complex STFT by ``rate`` (as ``torchaudio.functional.phase_vocoder``).

    Parameters
    ----------
    spec : complex tensor (..., F, T)
    rate : > 0; output has ceil(T / rate) frames
    hop_length : hop of ``spec``

    Returns
    -------
    complex tensor (..., F, ceil(T / rate))
    """
    n_freq, n_frames = spec.shape[-2], spec.shape[-1]
    steps = torch.arange(0, n_frames, rate, dtype=torch.float64)  # (T',)
    alphas = (steps % 1.0).to(torch.float32)  # (T',)
    # phases are accumulated in float64: in float32 the running sum (up to ~1e5 rad) drifts enough to
    # make neighbouring bins cancel, which audibly lowers the level of slowed-down audio
    advance = torch.linspace(0, math.pi * hop_length, n_freq, dtype=torch.float64)[:, None]  # (F, 1)
    phase_0 = spec[..., :1].angle().double()  # (..., F, 1)
    padded = torch.nn.functional.pad(spec, [0, 2])  # (..., F, T+2)
    s0 = padded[..., steps.long()]  # (..., F, T')
    s1 = padded[..., steps.long() + 1]  # (..., F, T')
    dphi = s1.angle().double() - s0.angle().double() - advance
    dphi = dphi - 2 * math.pi * torch.round(dphi / (2 * math.pi)) + advance
    phase = torch.cumsum(torch.cat([phase_0, dphi[..., :-1]], dim=-1), dim=-1)  # (..., F, T')
    phase = torch.remainder(phase, 2 * math.pi).to(torch.float32)
    mag = alphas * s1.abs() + (1 - alphas) * s0.abs()
    return torch.polar(mag, phase)


def resample_to_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Band-limited resampling of the last axis to ``length`` samples, in the frequency domain.

    The spectrum is truncated (shrinking: an ideal low-pass, so nothing aliases) or zero-padded
    (growing), as ``scipy.signal.resample`` does; the signal is treated as periodic, which only touches
    the first and last few milliseconds.

    Parameters
    ----------
    x : real tensor (..., N)
    length : output length

    Returns
    -------
    real tensor (..., length)
    """
    n = x.shape[-1]
    if length == n:
        return x.clone()
    spec = torch.fft.rfft(x)  # (..., N//2+1)
    keep = min(spec.shape[-1], length // 2 + 1)
    out = torch.zeros(*spec.shape[:-1], length // 2 + 1, dtype=spec.dtype)
    out[..., :keep] = spec[..., :keep]
    return torch.fft.irfft(out, n=length) * (length / n)  # (..., length)


def _stretch_one(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Time-stretch a (N,) or (B, N) tensor by one rate -> (..., round(N / rate))."""
    n = x.shape[-1]
    win = hann_window(N_FFT)
    # zero padding as librosa: reflect padding gives frame 0 bin phases that disagree within one partial,
    # and the phase vocoder would carry that disagreement (as cancellation) through the whole output
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, window=win, center=True, pad_mode="constant",
                      return_complex=True)  # (..., F, T)
    out_len = int(round(n / rate))
    stretched = phase_vocoder(spec, rate=rate, hop_length=HOP)  # (..., F, T')
    return torch.istft(stretched, n_fft=N_FFT, hop_length=HOP, window=win, center=True, length=out_len)


def _check(x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2:
        raise SingrecError(f"{what} expects a batch of shape (B, N), got {tuple(x.shape)}")
    if x.shape[-1] < N_FFT:
        raise SingrecError(f"{what} needs at least {N_FFT} samples, got {x.shape[-1]}")
    return x


def time_stretch_batch(x: torch.Tensor, rates, *, length: int | None = None):
    """Time-stretch each row by its own rate (> 1 = faster and shorter); pitch is kept.

    Parameters
    ----------
    x : tensor (B, N)
    rates : sequence or tensor (B,) of positive rates
    length : if given, every output is cut or zero-padded to this many samples

    Returns
    -------
    tensor (B, length) if ``length`` is given, else a list of B tensors of shape (round(N / rate_i),)
    """
    x = _check(x, "time_stretch_batch")
    rates = [float(r) for r in torch.as_tensor(rates, dtype=torch.float64).reshape(-1)]
    if len(rates) != x.shape[0] or min(rates) <= 0:
        raise SingrecError(f"need {x.shape[0]} positive rates, got {rates}")
    outs = [x[i].clone() if r == 1.0 else _stretch_one(x[i], r) for i, r in enumerate(rates)]
    if length is None:
        return outs
    return torch.stack([torch.nn.functional.pad(o[:length], [0, max(0, length - o.shape[-1])]) for o in outs])


def pitch_shift_batch(x: torch.Tensor, n_steps, *, sr: int = 16000) -> torch.Tensor:
    """Shift each row's pitch by its own number of semitones, keeping duration and formant-free.

    Implemented as librosa does: time-stretch by ``2 ** (-n / 12)``, then resample back to N samples.
    (``sr`` is accepted for API symmetry; the operation only depends on the ratio.)

    Parameters
    ----------
    x : tensor (B, N)
    n_steps : sequence or tensor (B,) of semitone shifts (fractions allowed)

    Returns
    -------
    tensor (B, N)
    """
    del sr
    x = _check(x, "pitch_shift_batch")
    steps = [float(s) for s in torch.as_tensor(n_steps, dtype=torch.float64).reshape(-1)]
    if len(steps) != x.shape[0]:
        raise SingrecError(f"need {x.shape[0]} semitone values, got {len(steps)}")
    n = x.shape[-1]
    out = torch.empty_like(x)
    for i, s in enumerate(steps):
        if s == 0.0:
            out[i] = x[i]
            continue
        stretched = _stretch_one(x[i], 2.0 ** (-s / 12.0))  # (N * 2**(s/12),)
        out[i] = resample_to_length(stretched, n)
    return out


def pitch_shift(y: np.ndarray, *, sr: int = 16000, n_steps: float) -> np.ndarray:
    """Pitch-shift a mono waveform by ``n_steps`` semitones; same length. Returns float32 (N,)."""
    return pitch_shift_batch(torch.as_tensor(y, dtype=torch.float32)[None], [n_steps], sr=sr)[0].numpy()


def time_stretch(y: np.ndarray, *, rate: float) -> np.ndarray:
    """Time-stretch a mono waveform by ``rate`` (> 1 = faster); returns float32 (round(N / rate),)."""
    return time_stretch_batch(torch.as_tensor(y, dtype=torch.float32)[None], [rate])[0].numpy()
