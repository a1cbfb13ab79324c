"""Melody encoder: a temporal-convolutional autoencoder (TCAE) on transposition-invariant pitch intervals.

The melody vector of a song must be the same whoever sings it, in whatever key and tempo (+-15 %), through
whatever recording chain, and must differ between tunes. The design removes what should not matter before
any learning happens, and the TCAE learns what remains:

1. **Pitch, not timbre** (:func:`pitch_salience`). One STFT of the waveform (1024-point, 48 ms hop; its
   frequency resolution resolves the harmonics of low voices, which the 48-band log-mel cannot: its bands
   are ~60 Hz wide below 1 kHz, a semitone at 200 Hz is 12 Hz), log power, and a single matrix product
   with a harmonic-comb kernel applied to the *whitened* log spectrum (log power minus its local average
   over frequency). Every kernel row sums to zero, so loudness cancels exactly and EQ curves, formants and
   the singer's spectral tilt nearly so: only harmonic peaks count. Output: salience of 145 f0 candidates
   on a 1/3-semitone grid, C2..C6.
2. **Loudness removed per frame** (:func:`pitch_distribution`): a sharp softmax over pitch turns each frame
   into a pitch distribution that sums to one (soft where two candidates compete, e.g. octave errors);
   two STFT frames are averaged per model frame (96 ms).
3. **Key removed by construction** (:func:`interval_features`): for lags of 0.2..6 s the distribution of
   the pitch *interval* between frame t and frame t - k (a cross-correlation over pitch, computed with
   FFTs). Transposing a song shifts every frame's distribution equally, which cancels, so no key or
   reference pitch has to be estimated. (Re-centring on the song's median pitch instead fails: on 10 s
   excerpts the median moves with the part of the tune that is covered, and 22 % of songs landed 0.5-12
   semitones off.) Only past frames are used, so the input is causal too. Pooled over time, these
   interval histograms are already a strong melody fingerprint (see the ablation in BENCHMARKS.md).
4. **TCAE** (:class:`TCAE`): 1x1 input projection, ``n_layers`` locuslab-style residual blocks of two
   weight-normalised dilated *causal* convolutions (dilation 2**i, receptive field
   ``1 + 2 (k - 1)(2**n - 1)`` frames, 49 s for the defaults), a per-frame latent, a small causal
   decoder reconstructing the input (MSE). Melody vector = mean and std of the latent over the song, one
   linear layer, L2-normalised (the linear layer learns the centring a cosine needs).
5. **Training** (:func:`train_melody`), self-supervised by default (needs only ``path`` and ``singer``):
   reconstruction + NT-Xent between two augmented views of the same song (independent crops, time
   stretch +-15 % applied to the pitch distributions *before* the intervals are computed, room-like
   smearing, pitch blur, noise, lost frames) + a gradient-reversal singer classifier on the melody vector
   (the singer column exists in every catalogue). With ``melody_labels=True`` and a ``melody_id`` column,
   half of each batch is paired with another singer's song of the same melody and those count as
   positives too (supervised contrastive; off by default, see ``encoders/checkpoints/README.md`` for what
   the shipped weights used).

Measured (``benchmarks/melody.py``, 150 unseen singers singing 150 unseen melodies): melody mAP across
singers 0.958 for the shipped weights, 0.978 for the pooled input alone (so the TCAE adds compactness and a
causal latent, not accuracy, on this benchmark), 0.035 for MFCC statistics; singer top-1 of the melody
vectors 0.000 (chance 0.006).

Entry point for indexing: :meth:`MelodyEncoder.embed_waveforms` (``input_kind == "waveform"``, which
``encoders.embed.embed_songs`` honours); ``embed_logmels`` raises, since the log-mel lacks the pitch detail.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, FeatureConfig, hann_window
from encoders.base import (atomic_torch_save, l2_normalise, retrieval_metrics, save_checkpoint, set_torch_threads,
                           supcon_loss)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Input representation: key-normalised pitch salience (no learning, no melody labels)
# ----------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _salience_kernel(sample_rate: int, n_fft: int, fmin_hz: float, n_pitch: int, bins_per_semitone: int,
                     n_harmonics: int, harmonic_decay: float, fmax_hz: float, whiten_bins: int) -> torch.Tensor:
    """(n_pitch, F') linear map from a log-power spectrum frame to harmonic-sum pitch salience.

    Row p = H_p (I - A): the harmonic comb H_p (harmonic h of f_p = fmin * 2**(p / (12 * bps)) read by linear
    interpolation between STFT bins, weighted ``harmonic_decay ** (h - 1)``, rows summing to 1) applied to the
    log spectrum minus its moving average A over ``whiten_bins`` bins. Every row sums to zero, so a gain
    cancels exactly and a smooth EQ curve or formant envelope nearly so; only the harmonic peaks count.
    """
    n_bins = n_fft // 2 + 1
    bin_hz = sample_rate / n_fft
    f0 = fmin_hz * 2.0 ** (np.arange(n_pitch) / (12.0 * bins_per_semitone))  # (P,)
    comb = np.zeros((n_pitch, n_bins), dtype=np.float64)  # (P, F)
    for h in range(1, n_harmonics + 1):
        pos = h * f0 / bin_hz  # (P,) fractional STFT bin of harmonic h
        rows = np.nonzero(h * f0 < min(fmax_hz, sample_rate / 2 - 2 * bin_hz))[0]
        lo = np.floor(pos[rows]).astype(int)
        frac = pos[rows] - lo
        w = harmonic_decay ** (h - 1)
        np.add.at(comb, (rows, lo), w * (1 - frac))
        np.add.at(comb, (rows, lo + 1), w * frac)
    comb /= comb.sum(axis=1, keepdims=True)
    # moving average over frequency, renormalised at the spectrum edges: (F, F)
    half = whiten_bins // 2
    idx = np.arange(n_bins)
    avg = (np.abs(idx[:, None] - idx[None, :]) <= half).astype(np.float64)
    avg /= avg.sum(axis=1, keepdims=True)
    kernel = comb - comb @ avg  # (P, F)
    used = int(np.nonzero(np.abs(kernel).sum(axis=0) > 0)[0].max()) + 1
    return torch.from_numpy(kernel[:, :used].astype(np.float32))  # (P, F') bins no row reaches dropped


def log_power_spectrum(waves: torch.Tensor, *, n_fft: int, hop_length: int) -> torch.Tensor:
    """Natural-log power STFT (Hann window, centred, zero-padded): (B, N) or (N,) -> (B, F, T) or (F, T),
    F = n_fft // 2 + 1, T = 1 + N // hop_length. The front end of :func:`pitch_salience`."""
    x = torch.as_tensor(waves, dtype=torch.float32)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, window=hann_window(n_fft), center=True,
                      pad_mode="constant", return_complex=True)  # (B, F, T)
    return torch.log(spec.real.square() + spec.imag.square() + 1e-8)


def salience_from_log_power(logpow: torch.Tensor, cfg: "MelodyConfig", *, sample_rate: int = 16000) -> torch.Tensor:
    """Harmonic-sum salience (..., n_pitch, T) of a log-power STFT (..., F, T) from :func:`log_power_spectrum`."""
    kernel = _salience_kernel(sample_rate, cfg.n_fft, cfg.fmin_hz, cfg.n_pitch, cfg.bins_per_semitone,
                              cfg.n_harmonics, cfg.harmonic_decay, cfg.fmax_harmonic_hz,
                              cfg.whiten_bins)  # (P, F')
    return torch.matmul(kernel, logpow[..., : kernel.shape[1], :]).clamp_min(0)  # (..., P, T)


def pitch_salience(waves: torch.Tensor, cfg: "MelodyConfig", *, sample_rate: int = 16000) -> torch.Tensor:
    """Harmonic-sum pitch salience on a log-frequency axis, independent of loudness and spectral envelope.

    One STFT, a log power, and one matrix product with :func:`_salience_kernel` (harmonic comb of the
    whitened log spectrum), clipped at zero.

    Parameters
    ----------
    waves : tensor (B, N), mono float audio at ``sample_rate``
    cfg : MelodyConfig (``n_fft``, ``hop_length``, pitch grid, harmonics)

    Returns
    -------
    tensor float32 (B, n_pitch, T) with T = 1 + N // cfg.hop_length
    """
    logpow = log_power_spectrum(waves, n_fft=cfg.n_fft, hop_length=cfg.hop_length)  # (B, F, T)
    return salience_from_log_power(logpow, cfg, sample_rate=sample_rate)  # (B, P, T)


def pitch_distribution(sal: torch.Tensor, cfg: "MelodyConfig") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame pitch distribution (a sharpened softmax of the salience) and a voicing level.

    The salience is divided by the song's 95th-percentile frame peak, so ``cfg.sharpness`` means the same
    at every level; the softmax over pitch makes every frame sum to one (loudness-free), close to a one-hot
    at the f0 with sub-bin spread when two candidates compete.

    Parameters
    ----------
    sal : tensor (B, n_pitch, T) from :func:`pitch_salience` (each row one song; pass songs one at a time
        when they have different lengths)

    Returns
    -------
    q : tensor (B, n_pitch, T'), non-negative, sums to 1 over pitch; T' = ceil(T / cfg.time_pool)
    voicing : tensor (B, 1, T'), frame peak / song reference, clipped to [0, 1.5]
    """
    peak = sal.amax(dim=1, keepdim=True)  # (B, 1, T)
    ref = torch.quantile(peak[:, 0], 0.95, dim=1).clamp_min(1e-6)[:, None, None]  # (B, 1, 1)
    q = torch.softmax(sal / (ref * cfg.sharpness), dim=1)  # (B, P, T)
    v = (peak / ref).clamp(0, 1.5)  # (B, 1, T)
    if cfg.time_pool > 1:  # average the distributions over time_pool STFT frames: (B, P, T) -> (B, P, ceil(T / pool))
        q = F.avg_pool1d(q, cfg.time_pool, stride=cfg.time_pool, ceil_mode=True)
        v = F.avg_pool1d(v, cfg.time_pool, stride=cfg.time_pool, ceil_mode=True)
    return q, v


@lru_cache(maxsize=8)
def _interval_basis(n_fft: int, bins_per_semitone: int, max_interval: int) -> torch.Tensor:
    """(2 * (n_fft//2+1), 2*max+1) real matrix: interleaved (Re, Im) of a cross-spectrum -> correlation at d.

    Folds in a box filter one semitone wide, so each output is the correlation summed over the fine
    bins of that semitone (d * bps - bps//2 .. d * bps + bps//2).
    """
    n_freq = n_fft // 2 + 1
    f = np.arange(n_freq)[:, None]  # (F, 1)
    half = bins_per_semitone // 2
    lags = np.arange(-max_interval, max_interval + 1)[None, :] * bins_per_semitone  # (1, D)
    w = np.where((f == 0) | (f == n_fft // 2), 1.0, 2.0) / n_fft  # irfft weights of each frequency
    re = np.zeros((n_freq, lags.shape[1]))
    im = np.zeros((n_freq, lags.shape[1]))
    for o in range(-half, half + 1):  # box filter over the fine bins of one semitone
        ang = 2 * np.pi * f * (lags + o) / n_fft
        re += w * np.cos(ang)
        im -= w * np.sin(ang)
    return torch.from_numpy(np.stack([re, im], axis=1).reshape(2 * n_freq, -1).astype(np.float32))  # (2F, D)


def interval_features(q: torch.Tensor, voicing: torch.Tensor, cfg: "MelodyConfig") -> torch.Tensor:
    """Transposition-invariant model input: soft pitch-interval distributions at several lags.

    For lag k (frames) and interval d (semitones), ``c_k[t, d] = sum_p q[t, p + d] * q[t - k, p]`` (summed
    over the fine bins of semitone d): the probability that the pitch rose by d semitones over the last k
    frames. A transposition moves every frame's distribution by the same amount, which cancels. Frames
    t < k (no past frame) are zero, so the input at frame t only depends on frames <= t. Computed as
    cross-spectra over the pitch axis (one FFT per frame) and one small matrix product per lag.

    Parameters
    ----------
    q : tensor (B, n_pitch, T), voicing : tensor (B, 1, T), from :func:`pitch_distribution`

    Returns
    -------
    tensor (B, in_channels, T): for each lag the intervals -max..+max semitones (after a voicing row if
    ``cfg.voicing_channel``)
    """
    b, n_pitch, n_t = q.shape
    reach = cfg.bins_per_semitone * cfg.max_interval + cfg.bins_per_semitone // 2
    n_fft = 1 << int(math.ceil(math.log2(n_pitch + reach + 1)))  # zero padding: no circular wrap
    basis = _interval_basis(n_fft, cfg.bins_per_semitone, cfg.max_interval)  # (2F, D)
    spec = torch.fft.rfft(q.transpose(1, 2), n=n_fft)  # (B, T, F)
    feats = [voicing] if cfg.voicing_channel else []
    for k in cfg.lags:
        past = F.pad(spec[:, : max(0, n_t - k)], (0, 0, min(k, n_t), 0))  # (B, T, F) spec of frame t-k, 0 if t<k
        cross = spec * past.conj()  # (B, T, F)
        c = torch.view_as_real(cross).reshape(b, n_t, -1) @ basis  # (B, T, 2F) @ (2F, D) -> (B, T, D)
        feats.append(c.transpose(1, 2))  # (B, D, T)
    return torch.cat(feats, dim=1)  # (B, [1 +] n_lags * D, T)


def melody_input(wave: np.ndarray | torch.Tensor, cfg: "MelodyConfig", *, sample_rate: int = 16000) -> torch.Tensor:
    """The model input for one mono waveform: (in_channels, T) with T = ceil((1 + N // hop_length) / time_pool)."""
    sal = pitch_salience(torch.as_tensor(wave, dtype=torch.float32)[None], cfg, sample_rate=sample_rate)
    return interval_features(*pitch_distribution(sal, cfg), cfg)[0]  # (C_in, T)


# ----------------------------------------------------------------------------------------------------------
# Blocks (locuslab/TCN): causal dilated convolutions with residual connections
# ----------------------------------------------------------------------------------------------------------

class Chomp1d(nn.Module):
    """Drop the last ``chomp`` time steps: turns a symmetric ``padding=(k-1)*d`` conv into a causal one."""

    def __init__(self, chomp: int):
        super().__init__()
        self.chomp = chomp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T + chomp) -> (B, C, T)
        return x[:, :, : x.shape[-1] - self.chomp].contiguous() if self.chomp else x


class TemporalBlock(nn.Module):
    """Two weight-normalised causal dilated convs (ReLU, dropout) plus a residual (1x1 conv if widths differ).

    Output frame t depends on input frames t - 2 * (k - 1) * d .. t only.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel_size - 1) * dilation
        wn = nn.utils.parametrizations.weight_norm
        self.net = nn.Sequential(
            wn(nn.Conv1d(c_in, c_out, kernel_size, padding=pad, dilation=dilation)), Chomp1d(pad),
            nn.ReLU(), nn.Dropout(dropout),
            wn(nn.Conv1d(c_out, c_out, kernel_size, padding=pad, dilation=dilation)), Chomp1d(pad),
            nn.ReLU(), nn.Dropout(dropout),
        )
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T)
        return self.relu(self.net(x) + self.downsample(x))


class TCN(nn.Module):
    """``n_layers`` TemporalBlocks with dilation 2**i; causal end to end."""

    def __init__(self, c_in: int, channels: int, n_layers: int, kernel_size: int, dropout: float):
        super().__init__()
        self.blocks = nn.Sequential(*[
            TemporalBlock(c_in if i == 0 else channels, channels, kernel_size, 2 ** i, dropout)
            for i in range(n_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, channels, T)
        return self.blocks(x)


def receptive_field(n_layers: int, kernel_size: int) -> int:
    """Frames of input that one output frame of a :class:`TCN` sees (two convs per block)."""
    return 1 + 2 * (kernel_size - 1) * (2 ** n_layers - 1)



# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MelodyConfig:
    # --- input representation (computed from the waveform; see module docstring) ---
    n_fft: int = 1024                # salience STFT size (64 ms: resolves the harmonics of low voices)
    hop_length: int = 768            # STFT hop, samples (48 ms)
    time_pool: int = 2               # STFT frames averaged per model frame: 96 ms frames, 10.4 per second
    whiten_bins: int = 15            # width (STFT bins) of the log-spectral envelope removed before the sum
    fmin_hz: float = 65.0            # lowest f0 candidate (C2)
    n_octaves: int = 4               # f0 range: fmin_hz .. fmin_hz * 2**n_octaves
    bins_per_semitone: int = 3       # absolute salience resolution
    n_harmonics: int = 8             # harmonics summed per f0 candidate
    harmonic_decay: float = 0.85     # weight of harmonic h is decay**(h-1)
    fmax_harmonic_hz: float = 5000.0  # harmonics above this are ignored (noise, EQ-dependent)
    sharpness: float = 0.03          # softmax temperature over pitch, in units of the song's salience peak
    lags: tuple[int, ...] = (2, 4, 8, 16, 32, 64)  # interval lags, model frames (0.19 .. 6.1 s)
    max_interval: int = 15           # intervals -max..+max semitones, one bin each
    voicing_channel: bool = False    # add the voicing level as an input row (carries room / noise cues)
    # --- model ---
    channels: int = 48               # TCN width
    n_layers: int = 7                # encoder residual blocks, dilation 2**i
    kernel_size: int = 3             # causal conv kernel
    latent_dim: int = 64             # bottleneck per time step
    embed_dim: int = 128             # melody vector size (linear map of the latent's mean and std)
    dec_layers: int = 2              # decoder residual blocks (causal too), dilation 2**i
    dropout: float = 0.0             # dropout in the TCN blocks (augmentation already regularises)
    # --- training (used by train_melody only) ---
    crop_seconds: float = 6.0        # training crop length
    lr: float = 2e-3
    weight_decay: float = 1e-4
    recon_weight: float = 1.0        # MSE reconstruction of the input
    contrast_weight: float = 1.0     # NT-Xent between two augmented views of the same crop
    temperature: float = 0.1
    adv_weight: float = 0.1          # gradient-reversal singer classifier on the melody vector
    melody_labels: bool = False      # optional: other singers' songs of the same melody_id are positives too
    stretch: float = 0.15            # time-stretch augmentation range (+-)
    smear: float = 0.6               # augmentation: max decay of the room-like smearing of pitch over frames
    pitch_blur: float = 2.0          # augmentation: max Gaussian blur over pitch, fine bins (1/3 semitone)

    @property
    def n_pitch(self) -> int:
        return 12 * self.bins_per_semitone * self.n_octaves + 1

    def frames_per_second(self, sample_rate: int = 16000) -> float:
        """Model frames per second of audio."""
        return sample_rate / (self.hop_length * self.time_pool)

    @property
    def in_channels(self) -> int:
        return int(self.voicing_channel) + len(self.lags) * (2 * self.max_interval + 1)

    def __post_init__(self):
        self.lags = tuple(int(k) for k in self.lags)  # checkpoints store lists


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

class TCAE(nn.Module):
    """Temporal-convolutional autoencoder: causal TCN -> per-frame latent -> causal TCN decoder -> input.

    ``encode`` gives the latent sequence (B, latent_dim, T); ``pool`` turns it into the song's melody vector
    (mean and standard deviation over valid frames, one linear layer, L2-normalised).
    """

    def __init__(self, cfg: MelodyConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Conv1d(cfg.in_channels, cfg.channels, 1)  # per-frame projection of the wide input
        self.encoder = TCN(cfg.channels, cfg.channels, cfg.n_layers, cfg.kernel_size, cfg.dropout)
        self.to_latent = nn.Conv1d(cfg.channels, cfg.latent_dim, 1)
        self.decoder = nn.Sequential(
            TCN(cfg.latent_dim, cfg.channels, cfg.dec_layers, cfg.kernel_size, cfg.dropout),
            nn.Conv1d(cfg.channels, cfg.in_channels, 1))
        self.head = nn.Linear(2 * cfg.latent_dim, cfg.embed_dim)  # pooled statistics -> melody vector

    def __reduce__(self):
        # weight-normalised convs pickle only through their state_dict (torch.nn.utils.parametrize); pickling
        # happens when embed_songs(processes=N) sends the encoders to its spawned processes
        return _tcae_from_state, (self.cfg, self.state_dict(), self.training)

    @property
    def receptive_field(self) -> int:
        """Input frames behind one latent frame (the 1x1 latent conv adds none)."""
        return receptive_field(self.cfg.n_layers, self.cfg.kernel_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, latent_dim, T)
        return self.to_latent(self.encoder(self.inp(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)  # (B, D, T)
        return self.decoder(z), z  # (B, C_in, T), (B, D, T)

    @staticmethod
    def statistics(z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mean and std over the first ``lengths[b]`` frames of each row: (B, D, T) -> (B, 2D)."""
        if lengths is None:
            lengths = torch.full((z.shape[0],), z.shape[2])
        mask = (torch.arange(z.shape[2])[None, :] < lengths[:, None]).to(z.dtype)[:, None, :]  # (B, 1, T)
        n = mask.sum(dim=2).clamp_min(1)  # (B, 1)
        mean = (z * mask).sum(dim=2) / n  # (B, D)
        std = ((((z - mean[:, :, None]) ** 2) * mask).sum(dim=2) / n + 1e-5).sqrt()  # (B, D)
        return torch.cat([mean, std], dim=1)  # (B, 2D)

    def pool(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Melody vectors: latent statistics through the linear head, L2-normalised: (B, D, T) -> (B, embed_dim)."""
        return F.normalize(self.head(self.statistics(z, lengths)), dim=1)


def _tcae_from_state(cfg: MelodyConfig, state: dict, training: bool) -> TCAE:
    """A pickled :class:`TCAE` rebuilt (see ``TCAE.__reduce__``)."""
    model = TCAE(cfg)
    model.load_state_dict(state)
    return model.train(training)


# ----------------------------------------------------------------------------------------------------------
# Encoder wrapper (the Embedder used by indexing)
# ----------------------------------------------------------------------------------------------------------

class MelodyEncoder:
    """Song melody vectors from waveforms: salience -> key-normalised input -> TCAE latent -> pooled, unit rows.

    Entry point for indexing is :meth:`embed_waveforms` (``input_kind == "waveform"``): the pitch detail
    the encoder needs is not in the 48-band log-mel (its bands are ~60 Hz wide below 1 kHz, a semitone at
    200 Hz is 12 Hz), so :meth:`embed_logmels` raises a :class:`SingrecError` that says so.
    """

    name = "melody"
    input_kind = "waveform"

    def __init__(self, model: TCAE, *, features: FeatureConfig = DEFAULT_FEATURES, batch_frames: int = 40_000):
        self.model = model.eval()
        self.cfg = model.cfg
        self.features = features
        self.dim = self.cfg.embed_dim
        self.batch_frames = batch_frames  # padded frames per forward pass (bounds memory)
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.metrics: dict = {}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, features: FeatureConfig = DEFAULT_FEATURES) -> "MelodyEncoder":
        """Build from a checkpoint dict written by :func:`encoders.base.save_checkpoint`."""
        cfg = MelodyConfig(**ckpt["config"])
        model = TCAE(cfg)
        model.load_state_dict(ckpt["state_dict"])
        return cls(model, features=features)

    def inputs(self, waves: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """Model inputs (in_channels, T_i) for mono waveforms at ``features.sample_rate``."""
        out = []
        for w in waves:
            w = torch.as_tensor(np.asarray(w, dtype=np.float32))
            if w.ndim != 1 or w.numel() < self.cfg.n_fft // 2 + 1:
                raise SingrecError(f"melody encoder needs mono audio of at least {self.cfg.n_fft // 2 + 1} "
                                   f"samples, got shape {tuple(w.shape)}")
            out.append(melody_input(w, self.cfg, sample_rate=self.features.sample_rate))  # (C_in, T)
        return out

    def embed_inputs(self, inputs: Sequence[torch.Tensor]) -> np.ndarray:
        """Embed precomputed model inputs (C_in, T_i): float32 (N, dim), unit rows.

        Songs are sorted by length and right-padded in batches; the encoder is causal, so padding after the
        end of a song cannot change its latent frames, and pooling ignores the padded ones.
        """
        set_torch_threads()
        n = len(inputs)
        out = np.zeros((n, self.dim), dtype=np.float32)
        order = sorted(range(n), key=lambda i: inputs[i].shape[-1])
        with torch.inference_mode():
            i = 0
            while i < n:
                j = i + 1
                while j < n and (j - i + 1) * inputs[order[j]].shape[-1] <= self.batch_frames:
                    j += 1
                idx = order[i:j]
                t_max = max(inputs[k].shape[-1] for k in idx)
                x = torch.zeros(len(idx), self.cfg.in_channels, t_max)  # (B, C_in, T_max)
                for r, k in enumerate(idx):
                    x[r, :, : inputs[k].shape[-1]] = inputs[k]
                lengths = torch.tensor([inputs[k].shape[-1] for k in idx])
                out[idx] = self.model.pool(self.model.encode(x), lengths).numpy()
                i = j
        return l2_normalise(out)

    def embed_waveforms(self, waves: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """Embed mono waveforms at ``features.sample_rate``: float32 (N, dim), unit rows."""
        set_torch_threads()
        with torch.inference_mode():
            inputs = self.inputs(waves)
        return self.embed_inputs(inputs)

    def embed_logmels(self, mels: Sequence[torch.Tensor]) -> np.ndarray:
        raise SingrecError("the melody encoder reads pitch from the waveform, not the 48-band log-mel; "
                           "call MelodyEncoder.embed_waveforms (input_kind == 'waveform')")


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------

class _GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky's gradient-reversal layer)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _songs_table(source) -> tuple[pd.DataFrame, dict]:
    """Songs DataFrame (path, singer, song_id, optional melody_id) from a Catalogue, DataFrame or path."""
    info: dict = {}
    if isinstance(source, (str, Path)):
        from data.catalogue import Catalogue
        source = Catalogue.open(source)
    if hasattr(source, "songs") and isinstance(source.songs, pd.DataFrame):
        info["source"] = str(getattr(source, "source", ""))
        if hasattr(source, "fingerprint"):
            info["fingerprint"] = source.fingerprint()
        df = source.songs
    elif isinstance(source, pd.DataFrame):
        df = source
    else:
        raise SingrecError(f"train_melody needs a Catalogue, a songs DataFrame or a catalogue path, "
                           f"got {type(source).__name__}")
    missing = [c for c in ("path", "singer") if c not in df.columns]
    if missing:
        raise SingrecError(f"songs table lacks column(s) {missing}")
    df = df.reset_index(drop=True).copy()
    if "song_id" not in df.columns:
        df["song_id"] = [str(Path(p).with_suffix("")) for p in df["path"]]
    if len(df) < 2:
        raise SingrecError(f"need at least 2 songs to train, got {len(df)}")
    return df, info


def _load_inputs(df: pd.DataFrame, cfg: MelodyConfig, features: FeatureConfig,
                 progress: bool = True) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int], float]:
    """Decode every song once and cache its pitch distribution and voicing (float16, (P, T) and (1, T))."""
    from data.audio import load_audio
    cache, ok, seconds = [], [], 0.0
    for i, path in enumerate(tqdm(df["path"], desc="melody features", unit="song", leave=False,
                                  disable=not progress)):
        try:
            y = load_audio(path, sr=features.sample_rate)
        except SingrecError as exc:
            log.warning("skipping %s", exc)
            continue
        seconds += y.size / features.sample_rate
        with torch.inference_mode():
            sal = pitch_salience(torch.from_numpy(y)[None], cfg, sample_rate=features.sample_rate)  # (1, P, T)
            q, v = pitch_distribution(sal, cfg)  # (1, P, T), (1, 1, T)
        cache.append((q[0].half().clone(), v[0].half().clone()))
        ok.append(i)
    return cache, ok, seconds


def _views(songs: list[tuple[torch.Tensor, torch.Tensor]], rng: np.random.Generator, cfg: MelodyConfig,
           n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented random crop per song, computed from the cached pitch distributions, batched.

    Each song contributes a segment of ``(n_frames + max lag) * rate`` frames resampled to
    ``n_frames + max lag`` frames (a time stretch by a random ``rate`` in ``1 +- cfg.stretch``) *before*
    the intervals are computed, so lags keep their meaning. Pitch-tracking errors are imitated by mixing
    noise distributions into the pitch distribution and blanking random frames, a room by smearing each
    frame with the previous ones, intonation and vibrato by a random blur over pitch; voicing gets a gain.
    The crop is the last ``n_frames`` minus a random offset, so some crops start without lag history.

    Returns
    -------
    (B, in_channels, n_frames) batch (zero-padded), (B,) valid lengths
    """
    hist = max(cfg.lags)
    seg_len = n_frames + hist
    n_pitch = songs[0][0].shape[0]
    segs = torch.zeros(len(songs), 1 + n_pitch, seg_len)  # (B, 1 + P, S)
    valid = torch.zeros(len(songs), dtype=torch.long)
    for b, (q, v) in enumerate(songs):  # q: (P, T), v: (1, T)
        rate = float(rng.uniform(1 - cfg.stretch, 1 + cfg.stretch))  # > 1: faster, fewer frames
        need = max(2, int(round(seg_len * rate)))
        start = int(rng.integers(0, q.shape[1] - need + 1)) if q.shape[1] > need else 0
        seg = torch.cat([v[:, start:start + need], q[:, start:start + need]], dim=0).float()  # (1 + P, <= need)
        n_out = max(2, min(seg_len, int(round(seg.shape[1] / rate))))
        segs[b, :, :n_out] = F.interpolate(seg[None], size=n_out, mode="linear", align_corners=False)[0]
        valid[b] = n_out
    b_sz = len(songs)
    v = segs[:, :1] * torch.from_numpy(rng.uniform(0.8, 1.25, (b_sz, 1, 1)).astype(np.float32))  # (B, 1, S)
    q = segs[:, 1:]  # (B, P, S)
    noise = torch.softmax(3 * torch.from_numpy(rng.standard_normal(q.shape).astype(np.float32)), dim=1)
    mix = torch.from_numpy(rng.uniform(0, 0.3, (b_sz, 1, 1)).astype(np.float32))
    q = (1 - mix) * q + mix * noise  # (B, P, S)
    # room-like smearing: each frame mixes in the last few frames with decay a**j (a random per view)
    decay = torch.from_numpy(rng.uniform(0, cfg.smear, (b_sz, 1)).astype(np.float32))  # (B, 1)
    taps = decay ** torch.arange(7, 0, -1, dtype=torch.float32)[None, :]  # (B, 7) kernel a**7 .. a**1
    kernel = torch.cat([taps, torch.ones(b_sz, 1)], dim=1)  # (B, 8), newest tap last (causal)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    q = F.conv1d(F.pad(q, (7, 0)).reshape(1, b_sz * n_pitch, -1),
                 kernel.repeat_interleave(n_pitch, dim=0)[:, None, :], groups=b_sz * n_pitch)  # (1, B*P, S)
    q = q.reshape(b_sz, n_pitch, seg_len)  # (B, P, S)
    # intonation / vibrato blur: a Gaussian over pitch with a random width per view
    sigma = torch.from_numpy(rng.uniform(0.05, cfg.pitch_blur, (b_sz, 1)).astype(np.float32))  # (B, 1) fine bins
    g = torch.exp(-0.5 * (torch.arange(-4, 5, dtype=torch.float32)[None, :] / sigma) ** 2)  # (B, 9)
    g = g / g.sum(dim=1, keepdim=True)
    qt = q.transpose(1, 2).reshape(1, b_sz * seg_len, n_pitch)  # (1, B*S, P) pitch as the conv axis
    q = F.conv1d(F.pad(qt, (4, 4)), g.repeat_interleave(seg_len, dim=0)[:, None, :], groups=b_sz * seg_len)
    q = q.reshape(b_sz, seg_len, n_pitch).transpose(1, 2)  # (B, P, S)
    blank = torch.from_numpy(rng.random((b_sz, 1, seg_len)) < 0.05)  # frames whose pitch is lost
    q = torch.where(blank, torch.full_like(q, 1.0 / n_pitch), q)
    padded = torch.arange(seg_len)[None, None, :] >= valid[:, None, None]  # (B, 1, S)
    q = q.masked_fill(padded, 0.0)
    v = v.masked_fill(padded, 0.0)
    feats = interval_features(q, v, cfg)  # (B, C_in, S)
    out = torch.zeros(b_sz, cfg.in_channels, n_frames)  # (B, C_in, L)
    lengths = torch.zeros(b_sz, dtype=torch.long)
    for b in range(b_sz):
        n = int(min(n_frames, valid[b]))
        end = int(valid[b]) - int(rng.integers(0, int(valid[b]) - n + 1))
        out[b, :, :n] = feats[b, :, end - n:end]
        lengths[b] = n
    return out, lengths


def _masked_mse(recon: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(target.shape[2])[None, :] < lengths[:, None]).to(target.dtype)[:, None, :]  # (B, 1, T)
    return (((recon - target) ** 2) * mask).sum() / (mask.sum() * target.shape[1])


def _evaluate(model: TCAE, inputs: list[torch.Tensor], singers: np.ndarray, melodies: np.ndarray | None) -> dict:
    """Validation on whole songs' model inputs (C_in, T_i): reconstruction MSE, melody mAP across singers,
    singer top-1 (leakage). One forward pass per song gives both the reconstruction and the melody vector."""
    model.eval()
    mse, frames, emb = 0.0, 0, []
    with torch.inference_mode():
        for x in inputs:
            recon, z = model(x[None])  # (1, C_in, T), (1, latent, T)
            mse += float(((recon[0] - x) ** 2).mean()) * x.shape[1]
            frames += x.shape[1]
            emb.append(model.pool(z)[0].numpy())  # unit vector, as MelodyEncoder.embed_inputs gives
    emb = np.stack(emb) if emb else np.zeros((0, model.cfg.embed_dim), np.float32)
    metrics = {"val_recon_mse": mse / max(frames, 1)}
    metrics["val_singer_top1"] = retrieval_metrics(emb, singers)["top1"]  # leakage: nearest song, same singer
    if melodies is not None:
        m_all = retrieval_metrics(emb, melodies)
        m_other = retrieval_metrics(emb, melodies, exclude_groups=singers)
        metrics.update(val_melody_map=m_all["map"], val_melody_top1=m_all["top1"],
                       val_melody_map_other_singers=m_other["map"], val_melody_queries=m_all["queries"])
    return metrics


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt") if out.suffix != ".pt" else out.with_suffix(".state.pt")


def train_melody(catalogue_or_songs_df, out_path: str | Path, *, epochs: int = 30, batch_size: int = 64,
                 seed: int = 0, val_fraction: float = 0.2, resume: bool = True,
                 features: FeatureConfig = DEFAULT_FEATURES, progress: bool = True, command: str | None = None,
                 callback=None, **overrides) -> Path:
    """Train the melody TCAE and write a self-describing checkpoint.

    Parameters
    ----------
    catalogue_or_songs_df : a ``data.catalogue.Catalogue``, its ``songs`` DataFrame (``path``, ``singer``,
        optional ``song_id``, ``melody_id``) or a catalogue folder / manifest path
    out_path : checkpoint file (``.pt``), or a folder to write ``melody.pt`` into
    epochs : passes over the training songs (one random crop pair per song and pass)
    batch_size : songs per step (each gives two augmented views)
    seed : seeds the split, the initialisation, the crops and the augmentation
    val_fraction : share of songs held out (split by song, seeded) for the validation metrics
    resume : continue from ``<out>.state.pt`` if it exists and was written with the same config and seed
    features : the feature config (only ``sample_rate`` is used by the melody input)
    progress : show tqdm bars (feature extraction, epochs)
    command : the command line recorded in the checkpoint (default: ``sys.argv``)
    callback : optional ``f(epoch, metrics)`` called after each epoch (progress reporting)
    **overrides : any :class:`MelodyConfig` field

    Returns
    -------
    Path of the checkpoint (``kind="melody"``; metrics, data summary and training info included)
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(MelodyConfig)})
    if unknown:
        raise SingrecError(f"unknown melody config option(s) {unknown}")
    cfg = replace(MelodyConfig(), **overrides)
    out = Path(out_path)
    if out.suffix != ".pt":
        out = out / "melody.pt"
    state_path = _state_path(out)
    set_torch_threads()
    t_start = time.perf_counter()

    df, src_info = _songs_table(catalogue_or_songs_df)
    inputs, ok, seconds = _load_inputs(df, cfg, features, progress)
    n_skipped = len(df) - len(ok)
    df = df.iloc[ok].reset_index(drop=True)
    if len(df) < 2:
        raise SingrecError(f"only {len(df)} readable song(s); need at least 2 to train")
    has_melody = "melody_id" in df.columns and df["melody_id"].notna().all()
    rng_split = np.random.default_rng(seed)
    perm = rng_split.permutation(len(df))
    n_val = min(len(df) - 1, int(round(val_fraction * len(df))))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    singer_codes = pd.Categorical(df["singer"].astype(str)).codes
    n_singers = int(singer_codes.max()) + 1
    melody_codes = pd.Categorical(df["melody_id"].astype(str)).codes if has_melody else None
    use_labels = has_melody and cfg.melody_labels
    data_info = {**src_info, "songs": int(len(df)), "train_songs": int(len(train_idx)),
                 "val_songs": int(len(val_idx)), "singers": n_singers, "hours": round(seconds / 3600, 3),
                 "melodies": int(df["melody_id"].nunique()) if has_melody else None,
                 "skipped_files": n_skipped}
    log.info("melody training data: %s", data_info)

    torch.manual_seed(seed)
    model = TCAE(cfg)
    adversary = nn.Linear(cfg.embed_dim, n_singers)
    params = list(model.parameters()) + list(adversary.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed + 1)
    n_frames = max(8, int(round(cfg.crop_seconds * cfg.frames_per_second(features.sample_rate))))
    steps_per_epoch = max(1, int(math.ceil(len(train_idx) / batch_size)))
    total_steps = epochs * steps_per_epoch
    history: list[dict] = []
    start_epoch, prev_seconds = 0, 0.0
    resume_key = {"config": asdict(cfg), "seed": seed, "val_fraction": val_fraction, "batch_size": batch_size,
                  "songs": [str(s) for s in df["song_id"]]}
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("key") == resume_key:
            model.load_state_dict(state["model"])
            adversary.load_state_dict(state["adversary"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = state["numpy_rng"]
            start_epoch, history, prev_seconds = state["epoch"], state["history"], state["seconds"]
            log.info("resuming melody training from %s at epoch %d", state_path, start_epoch)
        else:
            log.warning("ignoring %s: written with another config, seed, split or song list", state_path)

    by_melody: dict[int, list[int]] = {}
    if use_labels:
        for i in train_idx:
            by_melody.setdefault(int(melody_codes[i]), []).append(int(i))

    # validation inputs do not change between epochs: whole songs, computed once
    val_inputs = [interval_features(inputs[i][0].float()[None], inputs[i][1].float()[None], cfg)[0]
                  for i in val_idx]  # (C_in, T_i) each
    for epoch in tqdm(range(start_epoch, epochs), desc="melody epochs", unit="epoch", initial=start_epoch,
                      total=epochs, leave=False, disable=not progress):
        model.train()
        adversary.train()
        order = rng.permutation(train_idx)
        sums: dict[str, float] = {}
        for step in range(steps_per_epoch):
            songs = [int(i) for i in order[step * batch_size:(step + 1) * batch_size]]
            if use_labels:  # pair each song with another song of the same melody (another singer if any)
                half = songs[: max(1, len(songs) // 2)]
                partners = []
                for i in half:
                    same = [j for j in by_melody[int(melody_codes[i])] if j != i]
                    other = [j for j in same if singer_codes[j] != singer_codes[i]] or same or [i]
                    partners.append(int(other[rng.integers(len(other))]))
                songs = half + partners
            if len(songs) < 2:
                continue
            global_step = epoch * steps_per_epoch + step
            lr = cfg.lr * min(1.0, (global_step + 1) / max(1, steps_per_epoch)) * \
                0.5 * (1 + math.cos(math.pi * global_step / max(1, total_steps)))
            for group in opt.param_groups:
                group["lr"] = lr
            xs = [inputs[i] for i in songs]
            xa, la = _views(xs, rng, cfg, n_frames)  # (B, C_in, L), (B,)
            xb, lb = _views(xs, rng, cfg, n_frames)
            x = torch.cat([xa, xb])  # (2B, C_in, L)
            lengths = torch.cat([la, lb])  # (2B,)
            recon, z = model(x)  # (2B, C_in, L), (2B, D, L)
            emb = model.pool(z, lengths)  # (2B, embed_dim)
            song_ids = torch.tensor(songs * 2)
            positives = song_ids[:, None] == song_ids[None, :]  # (2B, 2B) the two views of a song
            if use_labels:  # ... and every song of the same melody (the batch holds pairs of them)
                mel = torch.as_tensor(melody_codes[songs * 2])
                positives |= mel[:, None] == mel[None, :]
            loss_rec = _masked_mse(recon, x, lengths)
            loss_con = supcon_loss(emb, positives, cfg.temperature)
            loss = cfg.recon_weight * loss_rec + cfg.contrast_weight * loss_con
            parts = {"recon": loss_rec.item(), "contrast": loss_con.item()}
            if cfg.adv_weight > 0:
                logits = adversary(_GradReverse.apply(emb))  # (2B, n_singers)
                loss_adv = F.cross_entropy(logits, torch.as_tensor(singer_codes[songs * 2]).long())
                loss = loss + cfg.adv_weight * loss_adv
                parts["adversary_ce"] = loss_adv.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        metrics = {f"train_{k}": v / steps_per_epoch for k, v in sums.items()}
        metrics.update(_evaluate(model, val_inputs, singer_codes[val_idx],
                                 None if melody_codes is None else melody_codes[val_idx]))
        metrics["epoch"] = epoch + 1
        history.append(metrics)
        log.info("melody epoch %d/%d: %s", epoch + 1, epochs,
                 ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        elapsed = prev_seconds + time.perf_counter() - t_start
        train_info = {"epochs": epochs, "epochs_done": epoch + 1, "batch_size": batch_size, "seed": seed,
                      "val_fraction": val_fraction, "steps": (epoch + 1) * steps_per_epoch,
                      "crop_frames": n_frames, "seconds": round(elapsed, 1), "melody_labels_used": use_labels,
                      "command": command or " ".join(sys.argv), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "history": history}
        save_checkpoint(out, kind="melody", model=model, config=asdict(cfg), features=features,
                        metrics=metrics, data=data_info, train=train_info)
        atomic_torch_save({"key": resume_key, "model": model.state_dict(), "adversary": adversary.state_dict(),
                           "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                           "numpy_rng": rng.bit_generator.state, "epoch": epoch + 1, "history": history,
                           "seconds": elapsed}, state_path)
        if callback is not None:
            callback(epoch + 1, metrics)
    if not out.is_file():  # nothing left to train (resumed a finished run) and no checkpoint yet
        raise SingrecError("no checkpoint written (epochs=0?)", out)
    return out
