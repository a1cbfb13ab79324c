"""Singing-expression descriptors from the f0 contour: vibrato, note onsets, glides, pitch micro-variation.

The timbre embedding is trained to tell singers apart by the *sound* of the voice and to ignore what changes
from song to song; it carries almost nothing of how a singer *moves* the pitch (benchmarks/ndcg_analysis.py:
its linear probes of vibrato rate, vibrato depth, scoop, glide and jitter score R^2 <= 0.1). These seven
descriptors measure that directly, per song; the ranking compares singers on them (recsys/rank.py), after
standardising each over the catalogue's singers.

Pipeline (pure numpy / torch, no learning):

1. f0 track, 10 ms frames: the melody encoder's harmonic-sum pitch salience (:func:`encoders.melody.
   pitch_salience`) at a finer hop, peak per frame refined by parabolic interpolation; a frame is voiced when
   its peak salience exceeds ``voicing`` x the song's 95th-percentile peak and an absolute floor.
2. notes: voiced runs of at least 80 ms, split where the pitch jumps by more than ``jump_cents`` in a frame.
3. per note: the residual of the pitch around a 250 ms running median (vibrato + micro-variation); on notes of
   at least 0.6 s its spectral peak in 3.5-8.5 Hz (vibrato rate), its amplitude after the first 0.3 s
   (vibrato depth: sqrt(2) x its standard deviation, cents; it reads ~1.3x the sine amplitude because the
   running median follows part of a slow vibrato) and how much larger that is than in the first 0.3 s (vibrato onset); the median
   second difference of the residual (micro-jitter); how far below the note's settled pitch it starts (scoop).
4. per song: the median of each note statistic, the share of voiced frames moving 10-80 cents per frame
   (glides between notes) and the voiced share.

Hand-written rather than taken from a library: librosa.pyin gives an f0 track but ~20x slower than this on one
core, and no maintained package computes these singing statistics; the salience is already in the project.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import median_filter, uniform_filter1d

from data.features import DEFAULT_FEATURES, FeatureConfig

EXPRESSION_FEATURES = ("vibrato_rate_hz", "vibrato_depth_cents", "vibrato_onset_cents", "scoop_cents",
                       "glide_share", "micro_jitter_cents", "voiced_share")
EXPRESSION_VERSION = 1  # bump when the descriptors change (indexes record it)


@dataclass(frozen=True)
class ExpressionConfig:
    hop_length: int = 160          # f0 frame hop, samples (10 ms at 16 kHz)
    n_fft: int = 1024              # salience STFT size (resolves the harmonics of low voices)
    bins_per_semitone: int = 3     # salience grid; the peak is refined between bins
    voicing: float = 0.35          # voiced: frame peak > voicing x the song's 95th-percentile peak ...
    min_salience: float = 1.5      # ... and > this (log-power units; silence ~0, noise ~1, a voice 5-9)
    jump_cents: float = 80.0       # a larger pitch step between frames starts a new note
    min_note_s: float = 0.08       # shorter voiced runs are ignored
    vibrato_note_s: float = 0.6    # notes at least this long give vibrato statistics
    onset_s: float = 0.3           # vibrato onset window at the start of a note
    median_s: float = 0.25         # running median that separates the note's pitch from vibrato
    vibrato_band_hz: tuple[float, float] = (3.5, 8.5)
    scoop_s: float = 0.05          # onset window compared with the settled pitch (scoop)


@lru_cache(maxsize=2)
def _salience_config(cfg: ExpressionConfig):
    from encoders.melody import MelodyConfig

    return replace(MelodyConfig(), hop_length=cfg.hop_length, time_pool=1, n_fft=cfg.n_fft,
                   bins_per_semitone=cfg.bins_per_semitone)


def f0_track(wave: np.ndarray, *, sample_rate: int = 16000,
             cfg: ExpressionConfig = ExpressionConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Pitch in cents above the salience grid's lowest f0 (65 Hz) and a voiced flag, per frame.

    Parameters
    ----------
    wave : float array (N,), mono audio at ``sample_rate``

    Returns
    -------
    cents : float64 (T,), T = 1 + N // cfg.hop_length
    voiced : bool (T,)
    """
    from encoders.melody import pitch_salience

    scfg = _salience_config(cfg)
    sal = pitch_salience(torch.as_tensor(np.asarray(wave, np.float32))[None], scfg,
                         sample_rate=sample_rate)[0].numpy().astype(np.float64)  # (P, T)
    n_p, n_t = sal.shape
    cols = np.arange(n_t)
    k = sal.argmax(0)  # (T,)
    a, b, c = sal[np.clip(k - 1, 0, n_p - 1), cols], sal[k, cols], sal[np.clip(k + 1, 0, n_p - 1), cols]
    den = a - 2 * b + c
    safe = np.where(np.abs(den) > 1e-9, den, 1.0)
    offset = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / safe, 0.0)  # parabolic peak, in bins
    cents = (k + np.clip(offset, -0.5, 0.5)) * 100.0 / cfg.bins_per_semitone
    voiced = b > max(cfg.voicing * float(np.quantile(b, 0.95)), cfg.min_salience)
    return cents, voiced


def expression_features(wave: np.ndarray, *, sample_rate: int = 16000,
                        cfg: ExpressionConfig = ExpressionConfig()) -> np.ndarray:
    """The seven :data:`EXPRESSION_FEATURES` of one song (see the module docstring).

    Parameters
    ----------
    wave : float array (N,), mono audio at ``sample_rate``

    Returns
    -------
    float32 (7,); statistics of notes that do not occur (no long note, say) are 0
    """
    fps = sample_rate / cfg.hop_length
    cents, voiced = f0_track(wave, sample_rate=sample_rate, cfg=cfg)
    jump = np.abs(np.diff(cents, prepend=cents[:1])) > cfg.jump_cents
    edges = np.diff(np.r_[0, (voiced & ~jump).astype(np.int8), 0])
    notes = [(s, e) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))
             if e - s >= cfg.min_note_s * fps]
    rate, depth, onset, scoop, jitter = [], [], [], [], []
    early = int(round(cfg.onset_s * fps))
    n_fft = 1024  # zero-padded FFT of a note's residual: 0.1 Hz bins at 100 frames/s
    for s, e in notes:
        c = cents[s:e]
        resid = c - median_filter(c, size=int(cfg.median_s * fps) | 1, mode="nearest")  # vibrato + jitter
        jitter.append(np.median(np.abs(np.diff(resid, 2))) if len(c) > 2 else 0.0)
        if len(c) >= cfg.vibrato_note_s * fps:
            power = np.abs(np.fft.rfft(resid * np.hanning(len(resid)), n=max(n_fft, len(resid)))) ** 2
            f = np.fft.rfftfreq(max(n_fft, len(resid)), 1 / fps)
            in_band = (f >= cfg.vibrato_band_hz[0]) & (f <= cfg.vibrato_band_hz[1])
            rate.append(f[in_band][power[in_band].argmax()])
            depth.append(np.sqrt(2) * resid[early:].std())
            onset.append(resid[early:].std() - resid[:early].std())
        settled = np.median(c[len(c) // 3:])
        scoop.append(settled - c[:max(2, int(cfg.scoop_s * fps))].mean())
    step = np.abs(np.diff(uniform_filter1d(cents, 3)))
    glide = float(np.mean((step > 10) & (step < 80) & voiced[1:])) if len(step) else 0.0

    def med(x):
        return float(np.median(x)) if len(x) else 0.0

    return np.array([med(rate), med(depth), med(onset), med(scoop), glide, med(jitter), float(np.mean(voiced))],
                    dtype=np.float32)


class ExpressionEmbedder:
    """:func:`expression_features` behind the embedder interface of ``encoders.embed.embed_songs``.

    Unlike the encoders its rows are raw descriptors (not unit vectors): the index stores them as they are
    and the ranking standardises them over the catalogue's singers.
    """

    name = "expression"
    input_kind = "waveform"
    dim = len(EXPRESSION_FEATURES)
    version = EXPRESSION_VERSION

    def __init__(self, *, features: FeatureConfig = DEFAULT_FEATURES, cfg: ExpressionConfig = ExpressionConfig()):
        self.features = features
        self.cfg = cfg

    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 7) float32 descriptors of mono waveforms at ``features.sample_rate``."""
        if len(waves) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([expression_features(np.asarray(w), sample_rate=self.features.sample_rate, cfg=self.cfg)
                         for w in waves])
