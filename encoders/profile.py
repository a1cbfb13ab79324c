"""Voice profile: a singer's voice parameters (range, vocal tract, source, vibrato, onset habits) estimated
from audio, so that singers can be compared the way the synthetic ground truth compares them.

Why: the timbre embedding is trained to tell singers apart, not to place them in a space where *distance*
means "sounds alike"; the expression descriptors measure some habits directly but not in the units or
weighting of a voice's description. A voice profile is an estimate of the 19 parameters that describe a
synthetic singer (``data/synth.py``: tessitura, formant scale and shifts, open quotient, tilt, breathiness,
jitter, shimmer, vibrato rate/depth/delay, singer's formant, nasality, scoop, glide), read off by a ridge
head from song statistics. Singers close in profile are singers whose voices are described alike.

Three parts:

1. :func:`voice_features` -- 186 per-song statistics from one STFT and the f0 track of
   ``encoders/expression.py`` (no learning): the twelve expression descriptors; f0 percentiles; the
   long-term spectrum of voiced frames in sixth-octave bands (median and spread, level removed); the
   level of harmonics 2-16 relative to the first, harmonics above the troughs between them, frame-to-frame
   harmonic level changes; the harmonic envelope on the same band grid; vibrato (pooled spectrum and
   autocorrelation of the pitch residual, its build-up over the first 0.7 s of a note), scoops on detached
   notes, legato transitions (interval / peak slope, durations) and pitch micro-variation. Songs longer
   than ``max_seconds`` (20 s) are read from their middle.
2. Frame networks (:class:`FrameNet`, learnt) -- a DeepSets regressor over up to 200 voiced frames of a song,
   each described by its harmonic envelope and spectrum on a twelfth-octave grid (:func:`frame_features`,
   from the same STFT and f0 track), estimating the same parameters. Statistics averaged over all frames
   blur formants that move with the vowel; a network that reads each frame before pooling can use the frames
   where the harmonics sample the formants well. Four networks are trained, each without one quarter of the
   training singers; the head below is fitted on their out-of-fold estimates (each song estimated by the
   network that never saw its singer), and the index appends their mean estimate for each song to its
   statistics.
3. :class:`VoiceProfile` -- ridge regression from a singer's statistics (median and mean over its songs
   of the voice features, frame-network estimates and timbre vectors) to the standardised parameters: a
   weighted mean (0.3 / 0.7) of a linear ridge and a kernel ridge (RBF similarities to 2000 training singers),
   fitted by :func:`fit_profile` on a synthetic catalogue's ground truth (``singrec train --encoder
   profile``). A single song or clip is profiled from its own statistics. Standardised inputs are clipped to
   +-6, so one odd song cannot throw a singer far outside the training range.

The head is learnt from the synthesizer's parameters, so on real recordings its outputs are estimates in the
synthesizer's terms (e.g. "breath" is the level of aspiration noise the model would need); the features
themselves are ordinary signal statistics. Measured held-out figures are in BENCHMARKS.md.

Hand-written statistics and a ridge head as well as the frame networks: the statistics share the expression
descriptors' STFT and f0 track and carry the pitch-contour habits (vibrato, scoops, glides) that the frame
networks, which see frames without their order, cannot; on the same singers a 256-unit MLP head on the
statistics scored below the linear ridge, while the kernel part adds what the linear map misses and the frame
networks add what the statistics blur (BENCHMARKS.md, "Voice profile").
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import median_filter, uniform_filter1d
from torch import nn

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, FeatureConfig
from encoders.base import worker_processes
from encoders.checkpoint import DEFAULT_CHECKPOINTS, atomic_torch_save, load_encoder, save_checkpoint
from encoders.expression import (EXPRESSION_FEATURES, ExpressionConfig, analyse, expression_from_analysis,
                                 harmonic_levels, note_spans, parabolic_offset)

log = logging.getLogger(__name__)

VOICE_FEATURES_VERSION = 3  # bump when voice_features changes (indexes and profile checkpoints record it)

# display units of the synthesizer's singer parameters (data/synth.py), in its order
PROFILE_UNITS = {
    "tessitura": "MIDI", "formant_scale": "x", "f1_shift": "rel.", "f2_shift": "rel.", "f3_shift": "rel.",
    "f4_shift": "rel.", "open_quotient": "", "tilt": "dB/oct", "breath": "dB", "jitter": "%", "shimmer": "%",
    "vib_rate": "Hz", "vib_depth": "cents", "vib_delay": "s", "sf_gain": "dB", "sf_freq": "Hz",
    "nasality": "0-1", "scoop": "cents", "glide": "s",
}


# ---------------------------------------------------------------------------------------------- helpers
def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True."""
    e = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(e == 1), np.flatnonzero(e == -1)))


def _middle(wave: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    """The middle ``seconds`` of a waveform (all of it if shorter)."""
    keep = int(seconds * sample_rate)
    if wave.size <= keep:
        return wave
    start = (wave.size - keep) // 2
    return wave[start:start + keep]


def _median_rows(rows: list, width: int) -> list[float]:
    return list(np.median(np.asarray(rows, np.float64), axis=0)) if rows else [0.0] * width


@dataclass(frozen=True)
class VoiceFeatureConfig:
    track: ExpressionConfig = field(default_factory=ExpressionConfig)  # STFT, f0 track, expression settings
    band_lo_hz: float = 100.0      # sixth-octave band grid: 100 Hz ...
    n_bands: int = 36              # ... 6 octaves (to 6.4 kHz)
    n_harmonics: int = 16          # harmonics read per voiced frame
    max_seconds: float = 20.0      # longer songs: only their middle 20 s are analysed (a voice does not change
                                   # within a song; keeps a 3-min song's cost to ~2x a 10-s song's)
    vibrato_skip_frames: int = 30  # vibrato statistics start this far into a note (after its onset)
    envelope_window: int = 10      # vibrato build-up: residual spread in 100 ms windows over the first 0.7 s
    glide_min_cents: float = 80.0  # legato transitions at least this large


def _spectral_features(logpow: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray, sample_rate: int,
                       cfg: VoiceFeatureConfig) -> np.ndarray:
    """Band spectrum and harmonic statistics of voiced frames, (2 B + 2 H - 1 + 8 + B,) with B bands, H harmonics."""
    b, h_n = cfg.n_bands, cfg.n_harmonics
    idx = np.flatnonzero(voiced)  # at most max_seconds of frames: every voiced frame is read
    width = 2 * b + 2 * h_n - 1 + 8 + b
    if len(idx) < 10:
        return np.zeros(width, np.float32)
    lp = logpow[:, idx]  # (F, V) voiced frames only (index once: the rest reads this copy)
    db = (10.0 / np.log(10.0)) * lp.T  # (V, F) dB
    n_bins = db.shape[1]
    bin_hz = sample_rate / (2 * (n_bins - 1))
    freqs = np.arange(n_bins) * bin_hz
    edges = cfg.band_lo_hz * 2 ** (np.arange(b + 1) / 6)
    band = np.searchsorted(edges, freqs, side="right") - 1  # (F,) band of each bin, -1 / b outside
    inside = (band >= 0) & (band < b)
    average = np.zeros((int(inside.sum()), b), np.float32)  # (F_in, B): mean over each band's bins
    average[np.arange(average.shape[0]), band[inside]] = 1.0
    average /= np.maximum(average.sum(0), 1.0)
    bands = 10 * np.log10(np.exp(lp[inside].T) @ average + 1e-12)  # (V, B) dB
    bands -= bands.mean(1, keepdims=True)  # level removed per frame

    f0 = f0_hz[idx][:, None]  # (V, 1)
    peak, trough, ok = harmonic_levels(db, f0[:, 0], n_harmonics=h_n, bin_hz=bin_hz)  # (V, H) each
    rows = np.arange(len(idx))[:, None]
    peak_ok = np.where(ok, peak, np.nan)
    adjacent = np.diff(idx) == 1
    # harmonic envelope on the band grid: levels interpolated between neighbouring harmonics, level removed
    grid = edges[:-1] * 2 ** (1 / 12)  # band centres
    pos = grid[None, :] / f0  # (V, B) harmonic number at each grid frequency
    lo = np.clip(np.floor(pos).astype(int), 1, h_n - 1)
    w = pos - lo
    env = (peak_ok[rows, lo - 1] * (1 - w) + peak_ok[rows, lo] * w)  # (V, B)
    env[(pos < 1) | (pos > h_n)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (harmonics above Nyquist) -> 0 below
        env -= np.nanmean(env, axis=1, keepdims=True)
        out = [np.median(bands, 0), bands.std(0),
               np.nanmedian(peak_ok[:, 1:] - peak_ok[:, :1], 0),  # (H-1,) harmonic levels re H1
               np.nanmedian(np.where(ok, peak - trough, np.nan), 0),  # (H,) harmonics above troughs
               np.nanmedian(np.abs(np.diff(peak_ok, axis=0))[adjacent], 0)[:8] if adjacent.any()
               else np.zeros(8),  # (8,) frame-to-frame level change of harmonics 1-8
               np.nanmedian(env, 0)]  # (B,)
    return np.nan_to_num(np.concatenate(out)).astype(np.float32)


def _contour_features(cents: np.ndarray, voiced: np.ndarray, fps: float, cfg: VoiceFeatureConfig,
                      notes: list | None = None) -> np.ndarray:
    """Vibrato, scoop, glide and micro-variation statistics of an f0 track (cents, 100 frames/s), (24,);
    ``notes``: its :func:`encoders.expression.note_spans`, if the caller has them already."""
    if notes is None:
        notes = note_spans(cents, voiced, fps=fps, cfg=cfg.track)
    skip, win = cfg.vibrato_skip_frames, cfg.envelope_window
    n_fft = 2048
    f = np.fft.rfftfreq(n_fft, 1 / fps)
    band = (f >= cfg.track.vibrato_band_hz[0]) & (f <= cfg.track.vibrato_band_hz[1])
    fb = f[band]
    pooled = np.zeros(band.sum())
    lags = np.arange(40)
    acf = np.zeros(lags.size)
    envelope, micro = [], []
    for s, e, resid in notes:  # resid: vibrato + micro-variation
        c = cents[s:e]
        d2 = np.diff(resid, 2)
        if len(d2) > 5:
            micro.append([np.std(d2), np.median(np.abs(np.diff(resid)))])
        if len(c) < 2 * skip:
            continue
        late = resid[skip:]
        if len(late) >= 45:  # pooled over notes: one note's spectrum is too coarse for the rate
            pooled += (np.abs(np.fft.rfft(late * np.hanning(len(late)), n_fft)) ** 2)[band]
            x = late - late.mean()
            a = np.correlate(x, x, "full")[len(x) - 1:len(x) - 1 + lags.size]
            acf += a / max(a[0], 1e-9) * len(x)
        if len(c) >= 100:
            spread = max(resid[7 * win:].std(), 1.0)  # floor of 1 cent: a flat note must not divide by ~0
            envelope.append([resid[i:i + win].std() / spread for i in range(0, 7 * win, win)] + [resid[7 * win:].std()])
    rate = centroid = concentration = ac_rate = ac_peak = 0.0
    if pooled.sum() > 0:
        k = int(pooled.argmax())
        offset = 0.0
        if 0 < k < len(pooled) - 1:  # parabola through the log spectrum around the peak
            offset = float(parabolic_offset(*np.log(pooled[k - 1:k + 2] + 1e-12)))
        rate = fb[k] + offset * (fb[1] - fb[0])
        centroid = float((pooled * fb).sum() / pooled.sum())
        concentration = float(pooled[max(0, k - 10):k + 11].sum() / pooled.sum())
    if acf[0] > 0:
        in_range = (lags >= fps / cfg.track.vibrato_band_hz[1]) & (lags <= fps / cfg.track.vibrato_band_hz[0])
        j = int(np.argmax(np.where(in_range, acf, -np.inf)))
        ac_rate = fps / (j + float(parabolic_offset(*acf[j - 1:j + 2])))
        ac_peak = acf[j] / acf[0]
    out = [rate, centroid, concentration, ac_rate, ac_peak] + _median_rows(envelope, 8)
    scoops = []  # notes after a breath: how far below the settled pitch they start
    for s, e, _ in notes:
        if s >= 3 and not voiced[s - 3:s].any() and e - s >= 20:
            c = cents[s:e]
            settled = np.median(c[10:])
            scoops.append([settled - c[:8].min(), settled - c[:3].mean(), settled - c[3:6].mean(),
                           settled - c[6:10].mean()])
    out += _median_rows(scoops, 4)
    glides = []  # legato transitions inside voiced runs
    for s, e in _runs(voiced):
        if e - s < 30:
            continue
        c = cents[s:e]
        m = uniform_filter1d(median_filter(c, size=15, mode="nearest"), 3)
        d = np.diff(m)
        for a, b in _runs(np.abs(d) > 2.0):
            a0, b0 = max(a - 3, 0), min(b + 3, len(m) - 1)
            interval = m[b0] - m[a0]
            if abs(interval) < cfg.glide_min_cents:
                continue
            seg = uniform_filter1d(c, 5)[a0:b0 + 1]
            frac = (seg - seg[0]) / interval
            t10, t90 = np.argmax(frac > 0.1), np.argmax(frac > 0.9)
            glides.append([abs(interval) / np.abs(d[a:b]).max(), b - a, max(t90 - t10, 0), abs(interval)])
    out += _median_rows(glides, 4) + [len(glides) / max(len(notes), 1)]
    out += _median_rows(micro, 2)
    return np.asarray(out, np.float32)


def voice_feature_names(cfg: VoiceFeatureConfig = VoiceFeatureConfig()) -> list[str]:
    """Names of the :func:`voice_features` columns, in order."""
    b, h = range(cfg.n_bands), range(2, cfg.n_harmonics + 1)
    return (list(EXPRESSION_FEATURES) + ["f0_p10_cents", "f0_p50_cents", "f0_p90_cents"]
            + [f"band{i}_db" for i in b] + [f"band{i}_spread_db" for i in b]
            + [f"h{i}_re_h1_db" for i in h] + [f"h{i}_above_trough_db" for i in range(1, cfg.n_harmonics + 1)]
            + [f"h{i}_step_db" for i in range(1, 9)] + [f"envelope{i}_db" for i in b]
            + ["vibrato_peak_hz", "vibrato_centroid_hz", "vibrato_concentration", "vibrato_acf_hz",
               "vibrato_acf_peak"] + [f"vibrato_build{i}" for i in range(7)] + ["vibrato_late_cents"]
            + ["scoop_min_cents", "scoop_0_cents", "scoop_30_cents", "scoop_60_cents"]
            + ["glide_interval_per_slope", "glide_frames", "glide_10_90_frames", "glide_interval_cents",
               "glides_per_note", "micro_d2_std_cents", "micro_step_cents"])


def voice_features(wave: np.ndarray, *, sample_rate: int = 16000, cfg: VoiceFeatureConfig = VoiceFeatureConfig(),
                   frames: "FrameNetConfig | None" = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-song voice statistics (module docstring, part 1).

    Parameters
    ----------
    wave : float array (N,), mono audio at ``sample_rate``; only the middle ``cfg.max_seconds`` are read
    frames : if given, also return the song's voiced frames for the frame network (:func:`frame_features`,
        read from the same STFT and f0 track)

    Returns
    -------
    float32 (D,) with D = ``len(voice_feature_names(cfg))``; the first twelve are the expression descriptors
    (:func:`encoders.expression.expression_features`). Statistics of things that do not occur are 0.
    With ``frames``: the statistics and the (n, 2 B + 1) frames.
    """
    wave = _middle(np.asarray(wave, np.float32), cfg.max_seconds, sample_rate)
    logpow, cents, voiced, f0_hz = analyse(wave, sample_rate=sample_rate, cfg=cfg.track)  # (F, T), (T,) x3
    fps = sample_rate / cfg.track.hop_length
    notes = note_spans(cents, voiced, fps=fps, cfg=cfg.track)  # read by both the expression and the contour part
    expression = expression_from_analysis(logpow, cents, voiced, f0_hz, sample_rate=sample_rate, cfg=cfg.track,
                                          notes=notes)
    lp = logpow.numpy()
    c = cents[voiced]
    pct = np.percentile(c, [10, 50, 90]) if len(c) else np.zeros(3)
    stats = np.concatenate([expression, np.asarray(pct, np.float32),
                            _spectral_features(lp, f0_hz, voiced, sample_rate, cfg),
                            _contour_features(cents, voiced, fps, cfg, notes)]).astype(np.float32)
    if frames is None:
        return stats
    return stats, frame_features(lp, f0_hz, voiced, sample_rate=sample_rate, cfg=frames)


# ------------------------------------------------------------------------------------------- frame network
@dataclass(frozen=True)
class FrameNetConfig:
    n_bands: int = 72              # twelfth-octave grid: 100 Hz ...
    band_lo_hz: float = 100.0      # ... 6 octaves (to 6.4 kHz)
    n_harmonics: int = 64          # harmonics read per frame (those below the grid's top)
    n_frames: int = 200            # voiced frames read per song, evenly spaced
    hidden: int = 192              # frame MLP width
    heads: int = 4                 # attention-pooling heads (plus a plain mean)
    epochs: int = 20               # training: passes over the songs ...
    batch: int = 64                # ... songs per step ...
    keep: int = 128                # ... frames drawn at random from each song per step
    lr: float = 2e-3               # one-cycle peak learning rate (AdamW, weight decay 1e-4)
    folds: int = 4                 # networks, each trained without one of this many groups of the singers; the
                                   # head is fitted on their out-of-fold estimates and the index uses their mean
                                   # (4 rather than 2: each network sees 3/4 of the singers; BENCHMARKS.md)

    @property
    def in_dim(self) -> int:
        return 2 * self.n_bands + 1

    def frames_key(self) -> str:
        """The settings that decide what :func:`frame_features` returns (not the training ones): a frames cache's
        key."""
        return str(sorted((k, v) for k, v in asdict(self).items()
                          if k in ("n_bands", "band_lo_hz", "n_harmonics", "n_frames")))


def frame_features(logpow: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray, *, sample_rate: int = 16000,
                   cfg: FrameNetConfig = FrameNetConfig()) -> np.ndarray:
    """What the frame network reads of each voiced frame: its harmonic envelope and its spectrum.

    Parameters
    ----------
    logpow : (F, T) log-power STFT; f0_hz, voiced : (T,) its f0 track (:func:`encoders.expression.analyse`)

    Returns
    -------
    float32 (n, 2 B + 1), n <= ``cfg.n_frames`` voiced frames (evenly spaced over the song), B = ``cfg.n_bands``:
    the levels of the harmonics, interpolated in log frequency onto the band centres (0 outside the first and
    last harmonic), and the band levels, both in dB relative to the frame's power from 100 Hz to the grid's
    top; and log2(f0 / 100 Hz).
    """
    b = cfg.n_bands
    idx = np.flatnonzero(voiced)
    if len(idx) > cfg.n_frames:
        idx = idx[np.linspace(0, len(idx) - 1, cfg.n_frames).round().astype(int)]
    n_bins = logpow.shape[0]
    bin_hz = sample_rate / (2 * (n_bins - 1))
    freqs = np.arange(n_bins) * bin_hz
    edges = cfg.band_lo_hz * 2 ** (np.arange(b + 1) / 12)
    top = edges[-1]
    power = np.exp(logpow[:, idx].astype(np.float64)).T  # (V, F)
    band = np.searchsorted(edges, freqs, side="right") - 1  # (F,)
    inside = (band >= 0) & (band < b)
    average = np.zeros((n_bins, b))  # (F, B): mean over each band's bins
    average[np.flatnonzero(inside), band[inside]] = 1.0
    average /= np.maximum(average.sum(0), 1.0)
    level = 10 * np.log10(power[:, (freqs >= cfg.band_lo_hz) & (freqs < top)].sum(1) + 1e-12)[:, None]  # (V, 1)
    bands = 10 * np.log10(power @ average + 1e-12) - level  # (V, B)
    f0 = f0_hz[idx]  # (V,)
    peak, _, ok = harmonic_levels(10 * np.log10(power + 1e-12), f0, n_harmonics=cfg.n_harmonics, bin_hz=bin_hz)
    h = np.arange(1, cfg.n_harmonics + 1)
    last = (ok & (h[None] * f0[:, None] < top)).sum(1)  # (V,) usable harmonics (ok holds for 1..last)
    pos = (edges[:-1] * 2 ** (1 / 24))[None] / f0[:, None]  # (V, B) harmonic number at each band centre
    lo = np.clip(np.floor(pos).astype(int), 1, np.maximum(last - 1, 1)[:, None])  # (V, B)
    w = np.log2(pos / lo) / np.log2((lo + 1) / lo)  # linear in log frequency between harmonics lo and lo + 1
    rows = np.arange(len(idx))[:, None]
    env = peak[rows, lo - 1] * (1 - w) + peak[rows, np.minimum(lo, cfg.n_harmonics - 1)] * w - level  # (V, B)
    env[(pos < 1) | (pos > last[:, None]) | (last[:, None] < 2)] = 0.0
    return np.hstack([env, bands, np.log2(f0 / cfg.band_lo_hz)[:, None]]).astype(np.float32)


class FrameNet(nn.Module):
    """Voiced frames of one song -> the standardised voice parameters (a DeepSets regressor).

    Each frame goes through the same MLP; attention pooling (``heads`` softmax weightings over the frames) and
    a plain mean summarise the song; a small MLP reads the summary. Unlike statistics averaged over all frames,
    this can read formants off the frames where the harmonics sample them well (low notes, known vowels).
    """

    def __init__(self, cfg: FrameNetConfig, n_out: int):
        super().__init__()
        h = cfg.hidden
        self.register_buffer("in_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("in_std", torch.ones(cfg.in_dim))
        self.frame = nn.Sequential(nn.Linear(cfg.in_dim, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, h))
        self.attention = nn.Linear(h, cfg.heads)
        self.out = nn.Sequential(nn.Linear(h * cfg.heads + h, h), nn.GELU(), nn.Linear(h, n_out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) frames, mask (B, N) True for real frames -> (B, P); a song needs at least one frame."""
        z = self.frame((x - self.in_mean) / self.in_std)  # (B, N, h)
        a = self.attention(z).masked_fill(~mask[..., None], float("-inf")).softmax(1)  # (B, N, K)
        pooled = torch.einsum("bnk,bnh->bkh", a, z).flatten(1)  # (B, K h)
        m = mask[..., None].to(z.dtype)  # (B, N, 1)
        mean = (z * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, h)
        return self.out(torch.cat([pooled, mean], 1))


def _pad_frames(frames: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Songs' frames (each (n_i, D)) -> zero-padded (S, n, D) float32 and mask (S, n)."""
    d = frames[0].shape[1] if len(frames) else 0
    x = np.zeros((len(frames), n, d), np.float32)
    mask = np.zeros((len(frames), n), bool)
    for i, f in enumerate(frames):
        x[i, :len(f)] = f[:n]
        mask[i, :len(f)] = True
    return x, mask


def train_frame_nets(x: np.ndarray, mask: np.ndarray, y: np.ndarray, groups: Sequence, *,
                     cfg: FrameNetConfig = FrameNetConfig(), seed: int = 0, progress: bool = True,
                     state_path: str | Path | None = None, state_key: str = "") -> tuple[list[FrameNet], np.ndarray]:
    """Train ``cfg.folds`` frame networks on disjoint groups of singers.

    Parameters
    ----------
    x : (S, n, D) songs' frames (:func:`frame_features`, zero-padded); mask : (S, n) real frames
    y : (S, P) standardised parameters of each song's singer; groups : (S,) its singer
    state_path, state_key : if given, each finished network (and its out-of-fold estimates) is saved there under
        ``state_key``, and a run with the same key continues after the networks already saved; the random draws
        of the saved networks' training are replayed, so the result equals an uninterrupted run's

    Returns
    -------
    the networks, and (S, P) out-of-fold estimates: each song estimated by the network that did not see its
    singer (with one fold: in-sample)
    """
    from tqdm.auto import tqdm

    labels = np.asarray(groups)
    singers = np.unique(labels)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(singers), np.arange(len(singers)) % cfg.folds))
    fold = np.array([fold_of[s] for s in labels])
    # (frames / 10, D): every tenth real frame sets the input scaling (picked by index: x[mask] would copy all
    # the real frames first, 6.7 GB for 19,200 singers)
    x_flat = x.reshape(-1, x.shape[-1])[np.flatnonzero(mask.ravel())[::10]].astype(np.float64)
    in_mean, in_std = x_flat.mean(0), x_flat.std(0) + 1e-3
    yt = torch.from_numpy(np.asarray(y, np.float32))
    estimates = np.zeros(y.shape, np.float32)
    nets = []
    state = torch.load(state_path, weights_only=True) if state_path and Path(state_path).is_file() else {}
    saved = state.get("nets", []) if state.get("key") == state_key else []  # [{"state", "estimates"}] per network
    for k in range(cfg.folds):
        train = np.flatnonzero(fold != k) if cfg.folds > 1 else np.arange(len(x))
        held = np.flatnonzero(fold == k)
        torch.manual_seed(seed + k)
        net = FrameNet(cfg, y.shape[1])
        net.in_mean.copy_(torch.from_numpy(in_mean.astype(np.float32)))
        net.in_std.copy_(torch.from_numpy(in_std.astype(np.float32)))
        steps = max(len(train) // cfg.batch, 1)
        if k < len(saved):  # trained before: replay its random draws, take its weights and estimates
            log.info("frame network %d/%d: reusing the one saved in %s", k + 1, cfg.folds, state_path)
            for _ in range(cfg.epochs):
                for _ in _epoch_batches(rng, train, mask, steps, cfg):
                    pass
            net.load_state_dict(saved[k]["state"])
            estimates[held] = saved[k]["estimates"].numpy()
            nets.append(net.eval())
            continue
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps)
        bar = tqdm(range(cfg.epochs), desc=f"frame network {k + 1}/{cfg.folds}", disable=not progress)
        for _ in bar:
            total = 0.0
            for b, order in _epoch_batches(rng, train, mask, steps, cfg):
                xb = torch.from_numpy(x[b[:, None], order].astype(np.float32))  # (b, keep, D)
                mb = torch.from_numpy(mask[b[:, None], order])
                loss = ((net(xb, mb) - yt[b]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            bar.set_postfix(loss=f"{total / steps:.3f}")
        net.eval()
        estimates[held] = _frame_estimates([net], x[held], mask[held])
        nets.append(net)
        if state_path:
            saved = [*saved, {"state": net.state_dict(), "estimates": torch.from_numpy(estimates[held])}]
            atomic_torch_save({"key": state_key, "nets": saved}, state_path)
    return nets, estimates


def _epoch_batches(rng: np.random.Generator, train: np.ndarray, mask: np.ndarray, steps: int, cfg: FrameNetConfig):
    """One epoch of training batches: (songs (b,), the ``cfg.keep`` real frames drawn from each (b, keep)). All of
    an epoch's random draws happen here, so a resumed :func:`train_frame_nets` replays them by iterating."""
    perm = rng.permutation(train)
    for s in range(steps):
        b = perm[s * cfg.batch:(s + 1) * cfg.batch]
        # a random subset of each song's real frames (padding sorts last)
        yield b, np.argsort(~mask[b] + rng.random(mask[b].shape), axis=1)[:, :cfg.keep]  # (b,), (b, keep)


def _frame_estimates(nets: Sequence[FrameNet], x: np.ndarray, mask: np.ndarray, batch: int = 256) -> np.ndarray:
    """Mean estimate (S, P) of the networks for padded songs (S, n, D); songs without frames get 0."""
    p = nets[0].out[-1].out_features
    out = np.zeros((len(x), p), np.float32)
    has = np.flatnonzero(mask.any(1))
    with torch.no_grad():
        for s in range(0, len(has), batch):
            i = has[s:s + batch]
            xb, mb = torch.from_numpy(x[i].astype(np.float32)), torch.from_numpy(mask[i])
            out[i] = torch.stack([net(xb, mb) for net in nets]).mean(0).numpy()
    return out


class VoiceFeatureEmbedder:
    """:func:`voice_features` behind the embedder interface of ``encoders.embed.embed_songs`` (raw rows).

    With a ``head`` that has frame networks, each row ends with their estimates for the song
    (:meth:`VoiceProfile.frame_estimates`), which the head reads with the statistics.
    """

    name = "voice"
    input_kind = "waveform"
    version = VOICE_FEATURES_VERSION

    def __init__(self, *, features: FeatureConfig = DEFAULT_FEATURES, cfg: VoiceFeatureConfig = VoiceFeatureConfig(),
                 head: "VoiceProfile | None" = None):
        self.features = features
        self.cfg = cfg
        self.head = head if head is not None and head.frame_cfg is not None else None
        frame_columns = [f"frame_net_{p}" for p in self.head.cfg.params] if self.head is not None else []
        self.names = voice_feature_names(cfg) + frame_columns  # of the row's columns
        self.dim = len(self.names)

    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 voice statistics of mono waveforms at ``features.sample_rate``."""
        if len(waves) == 0:
            return np.zeros((0, self.dim), np.float32)
        sr = self.features.sample_rate
        if self.head is None:
            return np.stack([voice_features(np.asarray(w), sample_rate=sr, cfg=self.cfg) for w in waves])
        stats, frames = zip(*(voice_features(np.asarray(w), sample_rate=sr, cfg=self.cfg, frames=self.head.frame_cfg)
                              for w in waves))
        return np.hstack([np.stack(stats), self.head.frame_estimates(frames)]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ head
@dataclass(frozen=True)
class ProfileConfig:
    params: tuple[str, ...] = ()        # estimated parameters (the ground truth's p_* columns, prefix dropped)
    voice_dim: int = 0                  # voice_features columns
    timbre_dim: int = 0                 # timbre vector size (the head reads both)
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 13))  # ridge penalties tried
    cv_folds: int = 5                   # folds over singers for the reported held-out metrics
    clip: float = 6.0                   # standardised inputs are clipped to +-clip: a song with an odd statistic
                                        # cannot push a linear head far outside the training range
    voice_features: dict = field(default_factory=lambda: asdict(VoiceFeatureConfig()))
    voice_features_version: int = VOICE_FEATURES_VERSION
    timbre_sha256: str = ""             # the timbre encoder whose vectors the head was fitted on
    kernel_landmarks: int = 2000        # training singers kept as RBF kernel centres (0 = linear head only)
    kernel_gamma: float = 0.2           # RBF width: exp(-kernel_gamma / n_inputs * |z - z'|^2) on standardised inputs
    kernel_alpha: float = 0.01          # ridge penalty of the kernel part
    kernel_share: float = 0.7           # estimate = (1 - share) x linear + share x kernel part
    # (the four kernel settings: 5-fold CV over 4,800 training singers, BENCHMARKS.md "Voice profile")
    frame_net: dict | None = None       # asdict(FrameNetConfig) when the head has frame networks; their estimates
                                        # are the last len(params) of the voice_dim columns

    @property
    def in_dim(self) -> int:
        return 2 * (self.voice_dim + self.timbre_dim)  # median and mean over songs of [voice | timbre]

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileConfig":
        d = dict(d)
        d.setdefault("kernel_landmarks", 0)  # heads saved before the kernel part existed are linear
        d.setdefault("frame_net", None)  # ... or before the frame networks
        return cls(**{**d, "params": tuple(d.get("params", ())), "alphas": tuple(d.get("alphas", cls.alphas))})


def aggregate(voice: np.ndarray, timbre: np.ndarray, groups: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Median and mean over each group's songs of ``[voice | timbre]``.

    Parameters
    ----------
    voice : (N, D) voice features; timbre : (N, d) timbre vectors
    groups : (N,) group label of each song (its singer); None = every song on its own

    Returns
    -------
    (G, 2 (D + d)) float64 rows in order of first appearance, and the G group labels
    """
    x = np.hstack([np.asarray(voice, np.float64), np.asarray(timbre, np.float64)])  # (N, D + d)
    if groups is None:
        return np.hstack([x, x]), list(range(len(x)))
    frame = pd.DataFrame(x)
    labels = list(dict.fromkeys(groups))
    g = frame.groupby(np.asarray(groups), sort=False)
    return np.hstack([g.median().loc[labels].to_numpy(), g.mean().loc[labels].to_numpy()]), labels


class VoiceProfile(nn.Module):
    """Ridge head: aggregated song statistics -> standardised voice parameters (module docstring, part 2).

    Two parts read the same standardised inputs z, and the estimate is their ``kernel_share``-weighted mean:
    a linear map, and a kernel ridge over RBF similarities to ``kernel_landmarks`` training singers (a
    Nystroem approximation, whose normalisation is folded into ``k_weight``). All of it is buffers, so a
    checkpoint is plain tensors.
    """

    name = "profile"

    @property
    def dim(self) -> int:
        return len(self.cfg.params)

    def __init__(self, cfg: ProfileConfig):
        super().__init__()
        self.cfg = cfg
        p, n, m = len(cfg.params), cfg.in_dim, cfg.kernel_landmarks
        self.register_buffer("x_mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("x_scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(p, n, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(p, dtype=torch.float64))
        self.register_buffer("landmarks", torch.zeros(m, n, dtype=torch.float32))  # standardised inputs of m singers
        self.register_buffer("k_weight", torch.zeros(p, m, dtype=torch.float64))
        self.register_buffer("k_bias", torch.zeros(p, dtype=torch.float64))
        self.register_buffer("y_mean", torch.zeros(p, dtype=torch.float64))  # parameter units of the training set
        self.register_buffer("y_std", torch.ones(p, dtype=torch.float64))
        self.frame_cfg = FrameNetConfig(**cfg.frame_net) if cfg.frame_net else None
        if self.frame_cfg is not None:
            self.frame_nets = nn.ModuleList(FrameNet(self.frame_cfg, p) for _ in range(self.frame_cfg.folds))

    @property
    def frame_net_sha(self) -> str | None:
        """sha256 of the frame networks' weights (None without them): voice rows made with other networks have
        other estimates in their last columns."""
        if self.frame_cfg is None:
            return None
        h = hashlib.sha256()
        for name, t in self.frame_nets.state_dict().items():
            h.update(name.encode() + t.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def frame_estimates(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, P) mean estimate of the frame networks for N songs' :func:`frame_features` (0 for a song without
        voiced frames)."""
        if self.frame_cfg is None:
            raise SingrecError("this voice profile head has no frame networks")
        x, mask = _pad_frames(frames, self.frame_cfg.n_frames)
        return _frame_estimates(list(self.frame_nets), x, mask)

    def similarities(self, z: torch.Tensor) -> torch.Tensor:
        """RBF similarities (G, m) of standardised inputs z (G, n) to the landmarks."""
        d2 = torch.cdist(z, self.landmarks.to(z.dtype)).square()  # (G, m)
        return torch.exp(-(self.cfg.kernel_gamma / z.shape[1]) * d2)

    def linear(self, z: torch.Tensor) -> torch.Tensor:
        """The linear part's estimates (G, P) from standardised inputs z (G, n)."""
        return z @ self.weight.T + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (G, 2 (D + d)) -> (G, P) standardised parameters
        z = ((x - self.x_mean) / self.x_scale).clamp(-self.cfg.clip, self.cfg.clip)  # (G, n)
        if self.cfg.kernel_landmarks == 0:
            return self.linear(z)
        kernel = self.similarities(z) @ self.k_weight.T + self.k_bias  # (G, P)
        return (1 - self.cfg.kernel_share) * self.linear(z) + self.cfg.kernel_share * kernel

    def predict(self, voice: np.ndarray, timbre: np.ndarray, groups: Sequence | None = None) -> np.ndarray:
        """(G, P) standardised parameter estimates per group (per song when ``groups`` is None)."""
        x, _ = aggregate(voice, timbre, groups)
        if x.shape[1] != self.cfg.in_dim:
            raise SingrecError(f"voice profile head expects {self.cfg.voice_dim} voice features and "
                               f"{self.cfg.timbre_dim}-d timbre vectors, got {x.shape[1] // 2} columns in all")
        with torch.no_grad():
            return self(torch.from_numpy(x)).numpy()

    def in_units(self, z: np.ndarray) -> np.ndarray:
        """Standardised estimates -> the parameters' own units (``PROFILE_UNITS``)."""
        return np.asarray(z) * self.y_std.numpy() + self.y_mean.numpy()


def _fit_head(xs: np.ndarray, ys: np.ndarray, cfg: ProfileConfig, seed: int, **scaling) -> tuple[VoiceProfile,
                                                                                                np.ndarray]:
    """Fit both parts of the head on standardised inputs ``xs`` (S, n) and targets ``ys`` (S, P); ``scaling``:
    the x_mean / x_scale / y_mean / y_std buffers (default: identity). Returns the head and the linear part's
    ridge penalty per parameter.

    The kernel part is sklearn's Nystroem feature map (RBF kernel to ``kernel_landmarks`` randomly chosen
    training rows) followed by a ridge; its map is linear in the similarities, so ``k_weight`` = ridge
    coefficients x the Nystroem normalisation, and a prediction needs only the similarities.
    """
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import Ridge, RidgeCV

    ridge = RidgeCV(alphas=cfg.alphas, alpha_per_target=True).fit(xs, ys)
    buffers = {**scaling, "weight": ridge.coef_, "bias": np.atleast_1d(ridge.intercept_)}
    m = min(cfg.kernel_landmarks, len(xs))
    if m:
        ny = Nystroem(gamma=cfg.kernel_gamma / xs.shape[1], n_components=m, random_state=seed).fit(xs)
        kr = Ridge(alpha=cfg.kernel_alpha).fit(ny.transform(xs), ys)
        buffers.update(landmarks=ny.components_, k_weight=kr.coef_ @ ny.normalization_,
                       k_bias=np.atleast_1d(kr.intercept_))
    model = VoiceProfile(replace(cfg, kernel_landmarks=m))
    with torch.no_grad():
        for name, value in buffers.items():
            getattr(model, name).copy_(torch.from_numpy(np.asarray(value, np.float64)))
    return model.eval(), np.broadcast_to(ridge.alpha_, ys.shape[1])


def fit_profile(voice: np.ndarray, timbre: np.ndarray, singers: Sequence, truth: pd.DataFrame, *,
                cfg: ProfileConfig = ProfileConfig(), seed: int = 0) -> tuple[VoiceProfile, dict]:
    """Fit the head on songs of singers with known parameters; also report ``cv_folds``-fold held-out metrics.

    Parameters
    ----------
    voice : (N, D) :func:`voice_features` of the songs; timbre : (N, d) their timbre vectors
    singers : (N,) singer of each song
    truth : one row per singer: ``singer`` and numeric ``p_*`` parameter columns (``ground_truth/singers.csv``)

    Returns
    -------
    the fitted :class:`VoiceProfile`, and metrics: the ridge ``alpha`` per parameter, per-parameter ``cv_r2``
    and ``cv_ndcg@10`` of ranking singers by distance between held-out estimates (folds over singers), and
    the same two for the linear part alone (``cv_r2_mean_linear``, ``cv_ndcg@10_linear``)
    """
    from sklearn.model_selection import KFold

    from encoders.base import distance_ranking_ndcg, ground_truth_neighbours

    cols = [c for c in truth.columns if c.startswith("p_")]
    if not cols:
        raise SingrecError("ground truth has no p_* singer parameter columns")
    x, names = aggregate(voice, timbre, singers)  # (S, 2 (D + d))
    table = truth.set_index("singer")
    missing = [s for s in names if s not in table.index]
    if missing:
        raise SingrecError(f"{len(missing)} singers have no ground-truth parameters (e.g. {missing[0]!r})")
    y = table.loc[names, cols].to_numpy(np.float64)  # (S, P)
    if len(names) < 4 * cfg.cv_folds:
        raise SingrecError(f"too few singers to fit a voice profile ({len(names)}; need {4 * cfg.cv_folds})")
    cfg = replace(cfg, params=tuple(c[2:] for c in cols), voice_dim=np.asarray(voice).shape[1],
                  timbre_dim=np.asarray(timbre).shape[1])
    x_mean, x_scale = x.mean(0), np.maximum(x.std(0), 1e-9)
    y_mean, y_std = y.mean(0), np.maximum(y.std(0), 1e-12)
    xs, ys = np.clip((x - x_mean) / x_scale, -cfg.clip, cfg.clip), (y - y_mean) / y_std

    held_out, held_out_linear = np.zeros_like(ys), np.zeros_like(ys)
    for train, test in KFold(cfg.cv_folds, shuffle=True, random_state=seed).split(xs):
        fold, _ = _fit_head(xs[train], ys[train], cfg, seed)  # identity scaling: xs is standardised already
        with torch.no_grad():
            z = torch.from_numpy(xs[test])
            held_out[test] = fold(z).numpy()
            held_out_linear[test] = fold.linear(z).numpy()
    truth_nn = ground_truth_neighbours(pd.DataFrame({"singer": names, **{c: y[:, j] for j, c in enumerate(cols)}}))

    def r2_of(pred: np.ndarray) -> np.ndarray:
        return 1 - ((pred - ys) ** 2).mean(0) / ys.var(0)

    r2 = r2_of(held_out)
    model, alpha = _fit_head(xs, ys, cfg, seed, x_mean=x_mean, x_scale=x_scale, y_mean=y_mean, y_std=y_std)
    metrics = {"alpha": {p: float(a) for p, a in zip(model.cfg.params, alpha)},
               "singers": len(names), "songs": int(np.asarray(voice).shape[0]),
               "cv_ndcg@10": distance_ranking_ndcg(names, held_out, truth_nn), "cv_r2_mean": float(r2.mean()),
               "cv_r2": {p: float(v) for p, v in zip(model.cfg.params, r2)},
               "cv_ndcg@10_linear": distance_ranking_ndcg(names, held_out_linear, truth_nn),
               "cv_r2_mean_linear": float(r2_of(held_out_linear).mean())}
    return model, metrics


def profile_from_checkpoint(ckpt: dict) -> VoiceProfile:
    """Rebuild a :class:`VoiceProfile` from a checkpoint dict (``encoders.checkpoint.load_encoder`` calls this)."""
    model = VoiceProfile(ProfileConfig.from_dict(ckpt["config"]))
    state = dict(ckpt["state_dict"])
    if model.cfg.kernel_landmarks == 0:  # heads saved before the kernel part existed: empty kernel buffers
        for name in ("landmarks", "k_weight", "k_bias"):
            state.setdefault(name, getattr(model, name))
    model.load_state_dict(state)
    if model.cfg.voice_features_version != VOICE_FEATURES_VERSION:
        raise ValueError(f"fitted on voice features version {model.cfg.voice_features_version}, this code computes "
                         f"version {VOICE_FEATURES_VERSION}; refit it with `singrec train --encoder profile`")
    return model.eval()


def _song_frames(path: str, sample_rate: int, cfg: VoiceFeatureConfig, frames: FrameNetConfig) -> np.ndarray | None:
    """float16 :func:`frame_features` of one audio file (None if it cannot be read)."""
    from data.audio import load_audio

    try:
        wave = load_audio(path, sr=sample_rate)
    except SingrecError as exc:
        log.warning("%s", exc)
        return None
    wave = _middle(wave, cfg.max_seconds, sample_rate)  # what voice_features reads, without its statistics
    logpow, _, voiced, f0_hz = analyse(wave, sample_rate=sample_rate, cfg=cfg.track)
    return frame_features(logpow.numpy(), f0_hz, voiced, sample_rate=sample_rate, cfg=frames).astype(np.float16)


def song_frames(paths: Sequence[str], *, sample_rate: int = 16000, cfg: VoiceFeatureConfig = VoiceFeatureConfig(),
                frames: FrameNetConfig = FrameNetConfig(), workers: int | None = None,
                progress: bool = True) -> list[np.ndarray | None]:
    """:func:`frame_features` (float16) of audio files, in ``workers`` processes (default: one per core); None
    for a file that cannot be read."""
    from functools import partial

    from tqdm.auto import tqdm

    work = partial(_song_frames, sample_rate=sample_rate, cfg=cfg, frames=frames)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return [work(p) for p in tqdm(paths, desc="frames", disable=not progress)]
    with worker_processes(workers) as pool:
        return list(tqdm(pool.map(work, paths, chunksize=32), total=len(paths), desc="frames",
                         disable=not progress))


def train_profile(catalogue, out_path, *, timbre_encoder=None, progress: bool = True, command: str = "",
                  seed: int = 0, frame_net: FrameNetConfig | None = FrameNetConfig(),
                  workers: int | None = None) -> Path:
    """Embed synthetic catalogues (timbre vectors + voice features), fit the head on their ground truth and
    write ``out_path`` (a self-describing checkpoint of kind ``"profile"``).

    Parameters
    ----------
    catalogue : a catalogue folder / manifest / :class:`~data.catalogue.Catalogue` with
        ``ground_truth/singers.csv`` beside its manifest (``singrec synth`` writes one), or a list of them (their
        singers are kept apart: ``"2:ana-lind"`` is singer ana-lind of the second catalogue)
    timbre_encoder : the timbre encoder whose vectors the head reads (default: the shipped one)
    frame_net : train frame networks first (:func:`train_frame_nets`) and fit the head on the statistics plus
        their out-of-fold estimates; None: statistics only
    workers : processes reading the songs' statistics and frames (default: one per core)

    Each catalogue's statistics and frames are cached beside ``out_path`` (``<stem>.songs.pt`` and
    ``<stem>.frames.npz`` for the first, ``<stem>.songs.2.pt`` ... for the next), keyed by the catalogue's
    fingerprint, the timbre encoder and the settings: a refit with one more catalogue reads only the new one.
    Each trained frame network and its out-of-fold estimates are saved in ``<stem>.frame_nets.pt`` (keyed by the
    frames, the network settings, the seed and the singers): a killed run continues after the last one saved.
    """
    import time

    from data.catalogue import Catalogue

    start = time.time()
    sources = list(catalogue) if isinstance(catalogue, (list, tuple)) else [catalogue]
    if not sources:
        raise SingrecError("no catalogue to fit a voice profile on")
    cats = [c if isinstance(c, Catalogue) else Catalogue.open(c) for c in sources]
    timbre = timbre_encoder or load_encoder(DEFAULT_CHECKPOINTS["timbre"], kind="timbre")
    voice = VoiceFeatureEmbedder(features=timbre.features)
    out_path = Path(out_path)
    parts = [_read_training_catalogue(cat, k, out_path, timbre=timbre, voice=voice, frame_net=frame_net,
                                      workers=workers, progress=progress) for k, cat in enumerate(cats)]
    singers, truth = join_training_singers([part["singers"] for part in parts], [part["truth"] for part in parts])
    vecs = {kind: np.concatenate([part[kind] for part in parts]) for kind in ("voice", "timbre")}
    cfg = ProfileConfig(voice_features=asdict(voice.cfg), timbre_sha256=getattr(timbre, "checkpoint_sha256", ""),
                        frame_net=asdict(frame_net) if frame_net else None)
    voice_rows, nets, frame_metrics = vecs["voice"], None, {}
    if frame_net is not None:
        xs = [part.pop("x") for part in parts]
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)  # (S, n, D)
        del xs  # the catalogues' own copies (1.7 GB per 4,800 singers)
        mask = np.concatenate([part["mask"] for part in parts])  # (S, n)
        table = truth.set_index("singer")
        cols = [c for c in truth.columns if c.startswith("p_")]
        y_all = table[cols].to_numpy(np.float64)
        y = (table.loc[singers, cols].to_numpy(np.float64) - y_all.mean(0)) / np.maximum(y_all.std(0), 1e-12)
        t_nets = time.time()
        # each trained network is saved (the four take an hour for 9,600 singers): a run that is killed, or fails
        # after them (e.g. out of memory in the head's fit), continues with the networks it has
        nets_key = " ".join([*(part["frames_key"] for part in parts), repr(sorted(asdict(frame_net).items())),
                             f"seed {seed}", hashlib.sha256("\n".join(singers).encode()).hexdigest()])
        nets, oof = train_frame_nets(x, mask, y.astype(np.float32), singers, cfg=frame_net, seed=seed,
                                     progress=progress, state_key=nets_key,
                                     state_path=training_cache(out_path, "frame_nets"))
        frame_metrics = {"frame_net_seconds": round(time.time() - t_nets, 1)}
        voice_rows = np.hstack([vecs["voice"], oof])  # the head is fitted on out-of-fold estimates
        frame_metrics["frame_net_oof_r2"] = _r2_by_singer(oof, y, singers, [c[2:] for c in cols])
    model, metrics = fit_profile(voice_rows, vecs["timbre"], singers, truth, cfg=cfg, seed=seed)
    if nets is not None:
        model.frame_nets.load_state_dict(nn.ModuleList(nets).state_dict())
        metrics.update(frame_metrics)
        # the out-of-fold estimates the head was fitted on, for heads fitted on other vectors with the same
        # frame networks (benchmarks/mfcc_head.py)
        np.savez(training_cache(out_path, "frame_estimates"), estimates=oof,
                 frame_net_sha=np.array(model.frame_net_sha), singers=np.array(singers))
    data = [part["data"] for part in parts]
    data = data[0] if len(data) == 1 else {"catalogues": data, **{k: sum(d[k] for d in data)
                                                                   for k in ("songs", "singers", "failed")}}
    path = save_checkpoint(out_path, kind="profile", model=model, config=asdict(model.cfg), features=timbre.features,
                           metrics=metrics, data=data,
                           train={"command": command, "seconds": round(time.time() - start, 1), "seed": seed,
                                  "timbre_checkpoint": getattr(timbre, "checkpoint_path", None)})
    return Path(path)


def training_cache(out_path: str | Path, what: str, k: int = 0) -> Path:
    """The files :func:`train_profile` writes beside the checkpoint ``out_path``: per training catalogue (``k``
    from 0) its ``"songs"`` (statistics and timbre vectors, ``.pt``) and ``"frames"`` (``.npz``); for the run,
    ``"frame_nets"`` (the networks trained so far, ``.pt``) and ``"frame_estimates"`` (their out-of-fold
    estimates, ``.npz``)."""
    out_path = Path(out_path)
    suffix = {"songs": "pt", "frames": "npz", "frame_nets": "pt", "frame_estimates": "npz"}[what]
    return out_path.with_name(f"{out_path.stem}.{what}{'' if k == 0 else f'.{k + 1}'}.{suffix}")


def join_training_singers(singers: Sequence[Sequence[str]],
                          truths: Sequence[pd.DataFrame]) -> tuple[list[str], pd.DataFrame]:
    """Each training catalogue's song singers and ground-truth table, joined as :func:`train_profile` joins them.
    Singer names are only unique within a catalogue, so with several catalogues they become ``"K:name"``
    (``"2:ana-lind"`` is ana-lind of the second catalogue)."""
    if len(singers) == 1:
        return list(singers[0]), truths[0]
    names = [[f"{k + 1}:{s}" for s in part] for k, part in enumerate(singers)]
    tables = [t.assign(singer=[f"{k + 1}:{s}" for s in t["singer"]]) for k, t in enumerate(truths)]
    return [s for part in names for s in part], pd.concat(tables, ignore_index=True)


def _read_training_catalogue(cat, k: int, out_path: Path, *, timbre, voice: "VoiceFeatureEmbedder",
                             frame_net: FrameNetConfig | None, workers: int | None, progress: bool) -> dict:
    """The ``k``-th training catalogue's songs for :func:`train_profile`, from its caches when they are valid:
    ``voice`` / ``timbre`` rows, their ``singers``, the ground-truth table ``truth``, the frames ``x`` / ``mask``
    (with ``frame_net``) and a ``data`` summary for the checkpoint."""
    from data.synth import singer_truth_path
    from encoders.embed import embed_songs

    truth_path = singer_truth_path(cat.source)
    if not truth_path.is_file():
        raise SingrecError("a voice profile is fitted on a synthetic catalogue's ground truth; this catalogue has "
                           "no ground_truth/singers.csv (make one with `singrec synth`)", truth_path.parent.parent)
    fingerprint = cat.fingerprint()  # stats every file: once
    key = f"{fingerprint} {getattr(timbre, 'checkpoint_sha256', '')} v{VOICE_FEATURES_VERSION}"
    cache = training_cache(out_path, "songs", k)
    cached = torch.load(cache, weights_only=True) if cache.is_file() else {}
    paths = list(cat.songs["path"])
    if cached.get("key") == key:
        part = {"voice": cached["voice"].numpy(), "timbre": cached["timbre"].numpy(), "singers": cached["singers"]}
        failed = cached.get("failed_paths")
        log.info("reusing the song statistics cached in %s", cache)
        if failed is None:  # caches written before failed_paths: only usable when nothing failed
            if cached["failed"]:
                raise SingrecError("the cached statistics do not say which songs failed; delete the cache", cache)
            failed = []
    else:
        vecs, failures = embed_songs(paths, {"timbre": timbre, "voice": voice}, on_error="skip", progress=progress,
                                     processes=workers or os.cpu_count() or 1)
        bad = {f.index for f in failures}
        part = {**vecs, "singers": [s for i, s in enumerate(cat.songs["singer"]) if i not in bad]}
        failed = [paths[i] for i in sorted(bad)]
        atomic_torch_save({"key": key, "voice": torch.from_numpy(vecs["voice"]),
                           "timbre": torch.from_numpy(vecs["timbre"]), "singers": list(part["singers"]),
                           "failed": len(failed), "failed_paths": failed}, cache)
    part["truth"] = pd.read_csv(truth_path)
    part["data"] = {**cat.summary(), "failed": len(failed), "fingerprint": fingerprint}
    if frame_net is None:
        return part
    frames_cache = training_cache(out_path, "frames", k)
    part["frames_key"] = frames_key = f"{key} frames {frame_net.frames_key()}"
    cached_frames = _read_frames_cache(frames_cache, frames_key)
    if cached_frames is not None:
        part["x"], part["mask"] = cached_frames
        log.info("reusing the song frames cached in %s", frames_cache)
        return part
    failed_set = set(failed)
    kept = [p for p in paths if p not in failed_set]
    got = song_frames(kept, sample_rate=timbre.features.sample_rate, cfg=voice.cfg, frames=frame_net,
                      workers=workers, progress=progress)
    unread = [p for p, f in zip(kept, got) if f is None]
    if unread:
        raise SingrecError(f"{len(unread)} songs whose statistics were read could not be read for frames "
                           f"(e.g. {unread[0]})", cat.source)
    x, mask = _pad_frames(got, frame_net.n_frames)
    part["x"], part["mask"] = x.astype(np.float16), mask
    tmp = frames_cache.with_name(frames_cache.name + ".tmp.npz")
    np.savez(tmp, key=np.array(frames_key), x=part["x"], mask=mask)
    tmp.replace(frames_cache)
    return part


def _read_frames_cache(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, mask) of a frames cache written for ``key``, or None (no cache, or one for other settings)."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        return (z["x"], z["mask"]) if str(z["key"]) == key else None


def _r2_by_singer(estimates: np.ndarray, y: np.ndarray, singers: Sequence, params: Sequence[str]) -> dict:
    """R^2 per parameter of song estimates averaged per singer, against standardised targets (song rows)."""
    est = pd.DataFrame(estimates).groupby(np.asarray(singers), sort=False).mean().to_numpy()
    truth = pd.DataFrame(y).groupby(np.asarray(singers), sort=False).mean().to_numpy()
    r2 = 1 - ((est - truth) ** 2).mean(0) / truth.var(0)
    return {"mean": float(r2.mean()), **{p: float(v) for p, v in zip(params, r2)}}
