"""Timbre encoder: a frozen real-voice speaker encoder fused with a small TDNN over ~4 s log-mel crops, trained
contrastively; one song vector.

Song vector. ``[g, w * t] / sqrt(1 + w^2)`` (``w = tdnn_weight``): ``g`` is the song's GE2E speaker vector
(:mod:`encoders.speaker`: weights trained on thousands of real speakers, shipped in the ``resemblyzer``
wheel, frozen), ``t`` the TDNN's vector below, both unit length, so the fused cosine is
``(cos_g + w^2 cos_t) / (1 + w^2)``. The TDNN learns from singrec's synthetic singers what the pair policy
teaches; the speaker encoder brings what only real voices teach (on the real-singing dev set the fused vector
finds a singer's other songs better than either part: BENCHMARKS.md, "Real singing"). ``speaker=False``
gives the TDNN alone.

Reading order (top-down): helpers (crops, random recording chain) -> blocks -> config -> model ->
contrastive loss and pair policy -> :class:`TimbreEncoder` (the :class:`~encoders.base.Embedder`) ->
training (sampling views from an in-memory song bank, one epoch, validation).

Model. A log-mel crop (48 bands x 250 frames, 4 s) is normalised inside the model (80 dB floor below the
crop's peak, then the crop's own mean and std: any gain or log base works), passed through a 1-D
convolutional trunk with mel bands as channels (an x-vector / TDNN: a strided stem, dilated residual
blocks), attentive statistics pooling over time, and a linear layer to a 128-d embedding, L2-normalised.
A small MLP projection head is used by the loss only. A song vector is the mean of its crop embeddings
(crops every ~2 s; a song shorter than a crop is tiled to one crop), re-normalised.

Training. SupCon / NT-Xent with in-batch negatives over *views* of a batch of anchor songs. The pair
policy follows Yakura et al. (2022, "Self-supervised contrastive learning for singing voices"):

- anchor crop and a different crop of the same song are the base positive pair
  (``positives="singer"``: a crop of *another song by the same singer*, i.e. supervised-contrastive);
- a pitch-shifted / time-stretched copy of the anchor crop is an extra view: with policy ``"pos"`` it is one
  more positive of its anchor, with ``"neg"`` it is a hard negative (it is nobody's positive);
- the transforms run on audio (:mod:`data.augment`), then every view gets its own random recording chain
  (EQ tilt and peaks, gain, light reverb, noise; applied to the mel power) so that the encoder cannot
  recognise a song by its recording conditions, which in a catalogue differ from song to song.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, FeatureConfig, log_mel, mel_power
from encoders.base import l2_normalise, set_torch_threads, supcon_loss
from encoders.speaker import SPEAKER_FEATURES, SpeakerConfig, load_ge2e, speaker_vectors

log = logging.getLogger(__name__)

Policy = Literal["none", "pos", "neg"]


# ----------------------------------------------------------------------------------------------------------
# Helpers: crops, tiling, the random recording chain
# ----------------------------------------------------------------------------------------------------------

def crop_starts(n_frames: int, crop: int, hop: int) -> list[int]:
    """Start frames of the crops covering ``n_frames``: every ``hop``, plus one flush with the end."""
    if n_frames <= crop:
        return [0]
    starts = list(range(0, n_frames - crop + 1, hop))
    if starts[-1] != n_frames - crop:  # cover the tail too
        starts.append(n_frames - crop)
    return starts


def tile_frames(mel: torch.Tensor, n: int) -> torch.Tensor:
    """Repeat a (M, T) log-mel cyclically along time to exactly ``n`` frames -> (M, n)."""
    reps = math.ceil(n / mel.shape[-1])
    return mel.repeat(1, reps)[:, :n]  # (M, n)


def song_crops(mel: torch.Tensor, crop: int, hop: int) -> torch.Tensor:
    """All crops of one song's (M, T) log-mel -> (n_crops, M, crop); short songs are tiled to one crop."""
    if mel.shape[-1] < crop:
        return tile_frames(mel, crop)[None]  # (1, M, crop)
    starts = crop_starts(mel.shape[-1], crop, hop)
    return mel.unfold(-1, crop, 1)[:, starts].permute(1, 0, 2)  # (M, n, crop) -> (n, M, crop)


def _uniform(gen: torch.Generator, shape: tuple, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


@lru_cache(maxsize=4)
def _band_hz(features: FeatureConfig) -> torch.Tensor:
    """Centre frequency (Hz) of each mel band, (M,)."""
    import librosa

    hz = librosa.mel_frequencies(n_mels=features.n_mels + 2, fmin=features.fmin, fmax=features.fmax)[1:-1]
    return torch.as_tensor(hz, dtype=torch.float32)


def recording_chain(power: torch.Tensor, cfg: "TimbreConfig", gen: torch.Generator, *,
                    features: FeatureConfig = DEFAULT_FEATURES) -> torch.Tensor:
    """Apply an independent random recording chain to each mel-power crop (training augmentation).

    The chain mimics what differs between the recordings of a catalogue, on the mel power of each view:
    a parametric EQ (low and high shelves, peaking bands, a high-pass and sometimes a band limit), a room
    (an exponentially decaying power tail per band, shorter at high frequencies, with random RT60 and wet
    level), additive coloured background noise at a random SNR, sometimes mains hum, and the level.

    Parameters
    ----------
    power : tensor (V, M, T), mel power (linear, >= 0)
    cfg : the chain ranges (``chain_*`` fields)
    gen : torch random generator
    features : the mel bands' layout (for band frequencies and the frame rate)

    Returns
    -------
    tensor (V, M, T), mel power
    """
    V, M, T = power.shape
    hz = _band_hz(features)[None, :].clamp_min(1.0)  # (1, M)
    octave = torch.log2(hz)  # (1, M)
    clean = torch.rand((V, 1), generator=gen) < cfg.chain_clean_p  # (V, 1) views left untouched

    def u(lo: float, hi: float, shape=(V, 1)) -> torch.Tensor:
        return _uniform(gen, shape, lo, hi)

    # --- EQ (dB per band): shelves at 200 Hz / 4 kHz, peaking bands, high-pass, optional band limit
    eq_db = u(-cfg.chain_shelf_db, cfg.chain_shelf_db) / (1 + (hz / 200.0) ** 2)  # (V, M)
    eq_db = eq_db + u(-cfg.chain_shelf_db, cfg.chain_shelf_db) / (1 + (4000.0 / hz) ** 2)
    for _ in range(cfg.chain_peaks):
        centre = u(math.log2(120.0), math.log2(7000.0))  # octaves
        q = u(0.5, 3.0)
        eq_db = eq_db + u(-cfg.chain_peak_db, cfg.chain_peak_db) * torch.exp(-0.5 * ((octave - centre) * q * 1.2) ** 2)
    eq_db = eq_db + 10 * torch.log10(1 / (1 + (u(*cfg.chain_hp_hz) / hz) ** 4))  # high-pass
    lp = torch.where(torch.rand((V, 1), generator=gen) < cfg.chain_lp_p, u(*cfg.chain_lp_hz), torch.full((V, 1), 1e9))
    eq_db = eq_db + 10 * torch.log10(1 / (1 + (hz / lp) ** 12))  # band limit
    eq = 10.0 ** (eq_db / 10.0)  # (V, M) power gain
    out = power * eq[:, :, None]  # (V, M, T)

    # --- room: y[t] = x[t] + wet^2 * sum_k h[k] x[t-k], h a unit-sum exponential decay (per band: faster
    # at high frequencies), 60 dB down after rt60
    rt60 = torch.exp(u(math.log(cfg.chain_rt60[0]), math.log(cfg.chain_rt60[1])))  # (V, 1) seconds
    rt60_band = rt60 * (1.0 - 0.55 * (hz / hz.max()))  # (V, M)
    wet = u(0.0, cfg.chain_wet) * (torch.rand((V, 1), generator=gen) < cfg.chain_reverb_p)  # (V, 1)
    t = torch.arange(T, dtype=torch.float32) / features.frames_per_second  # (T,) seconds
    decay = torch.exp(-13.8 * t[None, None, :] / rt60_band[:, :, None])  # (V, M, T)
    kernel = (wet ** 2)[:, :, None] * decay / decay.sum(dim=-1, keepdim=True)  # (V, M, T)
    kernel[..., 0] += 1.0  # the direct sound
    n_fft = 2 * T
    spec = torch.fft.rfft(out, n=n_fft) * torch.fft.rfft(kernel, n=n_fft)  # (V, M, F)
    out = torch.fft.irfft(spec, n=n_fft)[..., :T].clamp_min(0.0)  # (V, M, T)

    # --- background noise: coloured (slope in dB/octave around 1 kHz, then the same EQ), fluctuating
    slope = u(-8.0, 2.0)  # (V, 1)
    colour = 10.0 ** (slope * torch.log2(hz / 1000.0) / 10.0) * eq  # (V, M)
    colour = colour / colour.mean(dim=1, keepdim=True)
    snr_db = u(*cfg.chain_snr_db)[:, :, None]  # (V, 1, 1)
    use = (torch.rand((V, 1, 1), generator=gen) < cfg.chain_noise_p)
    fluct = (1.0 + 0.5 * torch.randn((V, M, T), generator=gen)).clamp_min(0.05)  # (V, M, T), mean ~1
    level = out.mean(dim=(1, 2), keepdim=True) / 10.0 ** (snr_db / 10.0)  # (V, 1, 1)
    out = out + level * use * colour[:, :, None] * fluct
    # --- mains hum: steady power in the bands below ~350 Hz
    hum = (torch.rand((V, 1), generator=gen) < cfg.chain_hum_p) * 10.0 ** (u(-45.0, -30.0) / 10.0)  # (V, 1)
    hum_shape = (hz < 350.0).float() * (100.0 / hz) ** 2  # (1, M)
    out = out + (out.mean(dim=(1, 2))[:, None] * hum * hum_shape)[:, :, None]
    # --- level
    out = out * 10.0 ** (u(-cfg.chain_gain_db, cfg.chain_gain_db) / 10.0)[:, :, None]
    return torch.where(clean[:, :, None], power, out)


# ----------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------

class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm -> ReLU, with a residual connection when input and output shapes agree."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, dilation: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation,
                              padding=dilation * (kernel - 1) // 2, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        self.residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T / stride)
        y = F.relu(self.bn(self.conv(x)))
        return x + y if self.residual else y


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and std over time (as in ECAPA-TDNN): (B, C, T) -> (B, 2C).

    The attention lets the encoder weight voiced frames over pauses and noise.
    """

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.att = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.att(x), dim=-1)  # (B, C, T), sums to 1 over time
        mean = (w * x).sum(dim=-1)  # (B, C)
        var = (w * x.square()).sum(dim=-1) - mean.square()  # (B, C)
        return torch.cat([mean, var.clamp_min(1e-6).sqrt()], dim=-1)  # (B, 2C)


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------

@dataclass
class TimbreConfig:
    # --- model
    n_mels: int = 48                         # input bands; must equal the FeatureConfig's n_mels
    channels: int = 128                      # TDNN width
    dilations: tuple[int, ...] = (1, 2, 3)   # one residual block per entry (kernel 3)
    aggregate: bool = True                   # pool the concatenated outputs of all blocks, not just the last
    stat_channels: int = 256                 # width before attentive statistics pooling
    emb_dim: int = 128                       # the timbre embedding (L2-normalised)
    proj_dim: int = 64                       # projection head output, used by the loss only
    norm: Literal["crop", "band"] = "crop"   # input normalisation: crop mean/std, or also per-band mean
    floor_db: float = 80.0                   # log-mel floor below the crop's peak
    crop_frames: int = 250                   # 4 s at 62.5 frames/s
    hop_frames: int = 125                    # crop hop when embedding a whole song (2 s)
    # --- fusion with the frozen real-voice speaker encoder (encoders/speaker.py)
    speaker: bool = True                     # fuse the GE2E speaker vector into the song vector
    tdnn_weight: float = 0.5                 # the TDNN vector's weight against the speaker vector's (1)
    speaker_max_partials: int = 24           # 1.6-s partials read per song at most (bounds indexing cost)
    speaker_level_dbfs: float = -20.0        # level of a song's active frames before the speaker encoder
    # --- contrastive pair policy
    temperature: float = 0.1                 # NT-Xent temperature
    positives: Literal["song", "singer"] = "singer"  # base positive: another crop of the song / the singer
    songs_per_singer: int = 1                # anchors per singer in a batch ("P x K" batches when > 1)
    pitch: Policy = "neg"                    # pitch-shifted anchor: extra positive, hard negative, or unused
    stretch: Policy = "pos"                  # time-stretched anchor: likewise (best pair in the ablation)
    pitch_semitones: tuple[float, float] = (1.0, 3.0)   # |shift| range, random sign
    stretch_rates: tuple[float, float] = (0.7, 1.4)      # tempo factor range (> 1 = faster)
    stretch_min_change: float = 1.1                      # rates within [1/x, x] are not drawn
    transform_variants: int = 2              # pre-rendered pitch / stretch variants per training song
    # --- random recording chain per view
    chain: bool = True
    chain_clean_p: float = 0.1               # probability a view is left untouched
    chain_shelf_db: float = 8.0              # +- dB, low shelf (200 Hz) and high shelf (4 kHz)
    chain_peaks: int = 3                     # peaking EQ bands per view (120 Hz - 7 kHz, Q 0.5-3)
    chain_peak_db: float = 9.0               # +- dB per peaking band
    chain_hp_hz: tuple[float, float] = (20.0, 250.0)    # high-pass corner range
    chain_lp_p: float = 0.3                  # probability of a band limit (low-pass)
    chain_lp_hz: tuple[float, float] = (3500.0, 7800.0)  # its corner range
    chain_reverb_p: float = 0.8
    chain_rt60: tuple[float, float] = (0.15, 2.5)   # seconds (log-uniform)
    chain_wet: float = 0.7                   # max reverb amplitude relative to the direct sound
    chain_noise_p: float = 0.9
    chain_snr_db: tuple[float, float] = (12.0, 45.0)
    chain_hum_p: float = 0.2                 # probability of mains hum (-45..-30 dB)
    chain_gain_db: float = 12.0              # +- dB level
    mask_bands: int = 0                      # SpecAugment: max masked band range per view (0 = off)
    mask_frames: int = 0                     # SpecAugment: max masked frame range per view (0 = off)
    # --- optimisation
    epochs: int = 60
    batch_size: int = 64                     # anchor songs per step (views per step: 2-4x this)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_train_seconds: float = 30.0          # audio kept in memory per training song

    def __post_init__(self):
        self.dilations = tuple(int(d) for d in self.dilations)
        self.pitch_semitones = tuple(float(v) for v in self.pitch_semitones)
        self.stretch_rates = tuple(float(v) for v in self.stretch_rates)
        for name in ("chain_rt60", "chain_snr_db", "chain_hp_hz", "chain_lp_hz"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("pitch", "stretch"):
            if getattr(self, name) not in ("none", "pos", "neg"):
                raise ValueError(f"{name} must be 'none', 'pos' or 'neg', got {getattr(self, name)!r}")
        if self.positives not in ("song", "singer"):
            raise ValueError(f"positives must be 'song' or 'singer', got {self.positives!r}")
        if self.tdnn_weight < 0:
            raise ValueError(f"tdnn_weight must be >= 0, got {self.tdnn_weight}")
        if self.norm not in ("crop", "band"):
            raise ValueError(f"norm must be 'crop' or 'band', got {self.norm!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TimbreConfig":
        """Rebuild from ``asdict``; unknown keys raise TypeError (a checkpoint from another version)."""
        return cls(**d)

    @property
    def transforms(self) -> list[tuple[str, str]]:
        """The active (transform, policy) pairs, in view order."""
        return [(t, p) for t, p in (("pitch", self.pitch), ("stretch", self.stretch)) if p != "none"]


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

class TimbreNet(nn.Module):
    """log-mel crops (B, M, T) -> timbre embedding (B, emb_dim), plus a projection head for the loss."""

    def __init__(self, cfg: TimbreConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem = ConvBlock(cfg.n_mels, c, 5, stride=2)  # halves the frame rate: 31 frames/s
        self.blocks = nn.ModuleList([ConvBlock(c, c, 3, dilation=d) for d in cfg.dilations])
        n_in = c * len(cfg.dilations) if cfg.aggregate and cfg.dilations else c
        self.expand = ConvBlock(n_in, cfg.stat_channels, 1)
        self.pool = AttentiveStatsPool(cfg.stat_channels)
        self.embed = nn.Linear(2 * cfg.stat_channels, cfg.emb_dim)
        self.head = nn.Sequential(nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.ReLU(),
                                  nn.Linear(cfg.emb_dim, cfg.proj_dim))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Per-crop input normalisation, so that any gain (and any log base) gives the same input."""
        floor = x.amax(dim=(1, 2), keepdim=True) - self.cfg.floor_db / 10.0  # (B, 1, 1), log10 units
        x = torch.maximum(x, floor)  # (B, M, T)
        if self.cfg.norm == "band":
            x = x - x.mean(dim=2, keepdim=True)  # (B, M, T), removes any static EQ
        mean = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        std = x.std(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        return (x - mean) / (std + 1e-4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, T) log-mel -> (B, emb_dim) un-normalised embedding."""
        x = self.normalise(x)  # (B, M, T)
        x = self.stem(x)  # (B, C, T/2)
        outs = []
        for block in self.blocks:
            x = block(x)  # (B, C, T/2)
            outs.append(x)
        if self.cfg.aggregate and outs:
            x = torch.cat(outs, dim=1)  # (B, C * n_blocks, T/2): every block's output (as ECAPA's MFA)
        x = self.expand(x)  # (B, S, T/2)
        return self.embed(self.pool(x))  # (B, 2S) -> (B, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, T) log-mel -> (B, emb_dim) unit-norm timbre embedding."""
        return F.normalize(self.features(x), dim=-1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, T) log-mel -> (B, proj_dim) unit-norm projection used by the contrastive loss."""
        return F.normalize(self.head(self.features(x)), dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Contrastive loss and pair policy
# ----------------------------------------------------------------------------------------------------------

def view_groups(groups: torch.Tensor, cfg: TimbreConfig) -> torch.Tensor:
    """Group ids of every view of a batch, in view order [anchors, positives, *transformed anchors].

    Views with the same id are positives of each other. A ``"pos"`` transform copies its anchor's id; a
    ``"neg"`` transform gets a fresh negative id, so it is nobody's positive and only ever a negative (a
    hard one for its own anchor, whose content it shares).

    Parameters
    ----------
    groups : long tensor (B,), the anchors' song (or singer) ids, >= 0
    cfg : the pair policy (``pitch``, ``stretch``)

    Returns
    -------
    long tensor (V,), V = B * (2 + number of active transforms)
    """
    B = groups.shape[0]
    out = [groups, groups]
    for k, (_, policy) in enumerate(cfg.transforms):
        out.append(groups if policy == "pos" else -1 - (k * B + torch.arange(B)))
    return torch.cat(out)  # (V,)


def positive_mask(groups: torch.Tensor) -> torch.Tensor:
    """(V, V) bool: True where two different views share a group id."""
    same = groups[:, None] == groups[None, :]  # (V, V)
    return same & ~torch.eye(groups.shape[0], dtype=torch.bool)


def nt_xent(z: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-positive NT-Xent (SupCon, "L_out") with in-batch negatives: :func:`encoders.base.supcon_loss` with
    the positives of :func:`positive_mask`. Views without a positive (``"neg"`` transforms) only appear in the
    denominators.

    Parameters
    ----------
    z : (V, D) unit-norm projections
    groups : (V,) long group ids (see :func:`view_groups`)
    temperature : softmax temperature
    """
    return supcon_loss(z, positive_mask(groups), temperature)


# ----------------------------------------------------------------------------------------------------------
# The encoder (Embedder)
# ----------------------------------------------------------------------------------------------------------

class TimbreEncoder:
    """Song timbre embedder: the speaker vector fused with the TDNN's (mean of crop embeddings over the whole
    song), re-normalised; see the module docstring.

    Implements :class:`encoders.base.Embedder` (``name="timbre"``). With the speaker branch it reads waveforms
    (``input_kind == "waveform"``: the speaker encoder has its own mel); without it, log-mels. Get one with
    ``encoders.checkpoint.load_encoder(path)``; ``TimbreEncoder(model=..., features=...)`` wraps a trained net.
    """

    name = "timbre"

    def __init__(self, model: TimbreNet | None = None, *, config: TimbreConfig | None = None,
                 features: FeatureConfig = DEFAULT_FEATURES, batch_crops: int = 256):
        if model is None:
            model = TimbreNet(config or TimbreConfig())
        if model.cfg.n_mels != features.n_mels:
            raise ValueError(f"model expects {model.cfg.n_mels} mel bands, features have {features.n_mels}")
        if model.cfg.speaker and features.sample_rate != SPEAKER_FEATURES.sample_rate:
            raise ValueError(f"the speaker branch reads {SPEAKER_FEATURES.sample_rate} Hz audio, features are "
                             f"{features.sample_rate} Hz")
        self.model = model.eval()
        self.config = model.cfg
        self.features = features
        self.batch_crops = batch_crops
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.metrics: dict = {}
        self.speaker: SpeakerConfig | None = None
        self.frontend: dict | None = None  # what index.json records about the speaker weights
        if self.config.speaker:
            self.speaker = SpeakerConfig(max_partials=self.config.speaker_max_partials,
                                         level_dbfs=self.config.speaker_level_dbfs)
            _, sha = load_ge2e()  # fails here, naming the missing package, rather than mid-indexing
            self.frontend = {"package": "resemblyzer", "weights": "pretrained.pt", "sha256": sha}

    @property
    def speaker_key(self) -> str:
        """What the speaker vectors depend on (GE2E weights, level, partials): classifiers reading them check it."""
        if not self.speaker:
            return ""
        return f"{self.frontend['sha256']}:{self.speaker.level_dbfs:g}dBFS:{self.speaker.max_partials}"

    @property
    def input_kind(self) -> str:
        return "waveform" if self.speaker else "logmel"

    @property
    def dim(self) -> int:
        return self.config.emb_dim + (256 if self.speaker else 0)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, features: FeatureConfig) -> "TimbreEncoder":
        """Build from a checkpoint dict (see :mod:`encoders.checkpoint`); mismatches raise TypeError /
        RuntimeError / ValueError, which ``load_encoder`` turns into a SingrecError naming the file."""
        cfg = TimbreConfig.from_dict(ckpt["config"])
        model = TimbreNet(cfg)
        model.load_state_dict(ckpt["state_dict"], strict=True)
        return cls(model, features=features)

    def __repr__(self) -> str:
        return f"TimbreEncoder(dim={self.dim}, crop={self.config.crop_frames}, ckpt={self.checkpoint_path})"

    def embed_logmels(self, mels: Sequence[torch.Tensor]) -> np.ndarray:
        """Embed songs given as (n_mels, T_i) log-mels -> float32 (N, dim), unit rows. Only without the speaker
        branch, which reads the waveform (use :meth:`embed_waveforms`)."""
        if self.speaker:
            raise SingrecError("this timbre encoder fuses a speaker encoder that reads the waveform; call "
                               "embed_waveforms (input_kind == 'waveform')")
        return self.tdnn_vectors(mels)

    def tdnn_vectors(self, mels: Sequence[torch.Tensor]) -> np.ndarray:
        """The TDNN part: songs given as (n_mels, T_i) log-mels -> float32 (N, emb_dim), unit rows.

        Crops of all songs are batched together (``batch_crops`` per forward pass).
        """
        set_torch_threads()
        cfg = self.config
        if len(mels) == 0:
            return np.zeros((0, cfg.emb_dim), dtype=np.float32)
        crops, owner = [], []
        for i, m in enumerate(mels):
            m = torch.as_tensor(m, dtype=torch.float32)
            if m.ndim != 2 or m.shape[0] != cfg.n_mels:
                raise ValueError(f"song {i}: expected a ({cfg.n_mels}, T) log-mel, got {tuple(m.shape)}")
            c = song_crops(m, cfg.crop_frames, cfg.hop_frames)  # (n_i, M, crop)
            crops.append(c)
            owner.append(torch.full((c.shape[0],), i, dtype=torch.long))
        owner_t = torch.cat(owner)  # (n_total,)
        sums = torch.zeros(len(mels), cfg.emb_dim)  # (N, E)
        with torch.inference_mode():
            flat = torch.cat(crops)  # (n_total, M, crop)
            for s in range(0, flat.shape[0], self.batch_crops):
                emb = self.model(flat[s:s + self.batch_crops])  # (b, E), unit rows
                sums.index_add_(0, owner_t[s:s + self.batch_crops], emb)
        return l2_normalise(sums.numpy())

    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed mono float32 waveforms at ``features.sample_rate`` (16 kHz) -> float32 (N, dim), unit rows."""
        t = self.tdnn_vectors([log_mel(np.asarray(w, dtype=np.float32), cfg=self.features) for w in waves])
        if not self.speaker:
            return t
        g = speaker_vectors(waves, self.speaker)  # (N, 256)
        return l2_normalise(np.hstack([g, self.config.tdnn_weight * t]))  # (N, 256 + emb_dim)


# ----------------------------------------------------------------------------------------------------------
# Training: views from an in-memory song bank, one epoch, validation
# ----------------------------------------------------------------------------------------------------------

class SongBank:
    """Training songs held in memory as log-mels, with pre-rendered pitch-shifted / time-stretched variants.

    Every song's log-mel is computed once (float16, ~6 kB per second of audio), so anchor and positive
    crops are slices of it. The pair policy's transforms are slow on audio (a phase vocoder per clip), so
    for each active transform each song is rendered ``cfg.transform_variants`` times once, with random
    shifts / rates, through :mod:`data.augment` and the STFT; a transformed view is the anchor's span cut
    from one of them (frame-aligned: a stretched variant's span starts at ``start / rate``).

    Parameters
    ----------
    waves : mono float32 waveforms at ``features.sample_rate`` (not kept)
    singers : (n,) integer singer label per song
    cfg : the training config (which transforms, their ranges, how many variants); None = no variants
    seed : seeds the variants' shifts and rates
    """

    def __init__(self, waves: Sequence[np.ndarray], singers, *, features: FeatureConfig = DEFAULT_FEATURES,
                 cfg: "TimbreConfig | None" = None, seed: int = 0, progress: bool = False):
        self.singers = np.asarray(singers, dtype=np.int64)
        if len(self.singers) != len(waves):
            raise ValueError(f"{len(waves)} songs but {len(self.singers)} singer labels")
        self.features = features
        self.logmels = [self._logmel(torch.as_tensor(np.asarray(w, dtype=np.float32))) for w in waves]  # (M, T_i)
        self.n_frames = np.array([m.shape[-1] for m in self.logmels], dtype=np.int64)
        self.by_singer: dict[int, np.ndarray] = {int(s): np.flatnonzero(self.singers == s)
                                                 for s in np.unique(self.singers)}
        # variants[transform][song] = list of (shift or rate, (M, T') float16 log-mel)
        self.variants: dict[str, list[list[tuple[float, torch.Tensor]]]] = {}
        if cfg is not None and cfg.transforms:
            self._render_variants(waves, cfg, seed, progress)

    def _logmel(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log10(mel_power(wave, cfg=self.features).clamp_min(self.features.log_floor)).half()

    def _render_variants(self, waves, cfg: "TimbreConfig", seed: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        from data.augment import pitch_shift_batch, time_stretch_batch

        gen = torch.Generator().manual_seed(seed + 4242)
        for transform, _ in cfg.transforms:
            per_song = []
            for w in tqdm(waves, desc=f"rendering {transform} variants", unit="song", disable=not progress,
                          leave=False):
                x = torch.as_tensor(np.asarray(w, dtype=np.float32))[None]  # (1, N)
                vals = draw_transform(transform, cfg.transform_variants, cfg, gen)
                out = []
                for v in vals.tolist():
                    if transform == "pitch":
                        y = pitch_shift_batch(x, [v], sr=self.features.sample_rate)[0]  # (N,)
                    else:
                        y = time_stretch_batch(x, [v])[0]  # (N / v,)
                    out.append((v, self._logmel(y)))
                per_song.append(out)
            self.variants[transform] = per_song

    def __len__(self) -> int:
        return len(self.logmels)

    def state(self) -> dict:
        """Plain-type snapshot (tensors, lists, floats) for ``torch.save``; see :meth:`from_state`."""
        return {"singers": torch.from_numpy(self.singers), "features": self.features.to_dict(),
                "logmels": list(self.logmels),
                "variants": {t: [[(float(v), m) for v, m in song] for song in songs]
                             for t, songs in self.variants.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "SongBank":
        bank = cls.__new__(cls)
        bank.singers = state["singers"].numpy().astype(np.int64)
        bank.features = FeatureConfig(**state["features"])
        bank.logmels = list(state["logmels"])
        bank.n_frames = np.array([m.shape[-1] for m in bank.logmels], dtype=np.int64)
        bank.by_singer = {int(s): np.flatnonzero(bank.singers == s) for s in np.unique(bank.singers)}
        bank.variants = {t: [[(float(v), m) for v, m in song] for song in songs]
                         for t, songs in state["variants"].items()}
        return bank

    def crop(self, song: int, start: int, n: int, mel: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel frames [start, start + n) of a song (or of ``mel``) -> (M, n) float32; wraps cyclically
        past the end, and a song shorter than ``n`` is tiled."""
        m = self.logmels[song] if mel is None else mel
        T = m.shape[-1]
        if T < n:
            return tile_frames(m, n).float()
        start = start % T
        if start + n <= T:
            return m[:, start:start + n].float()
        return torch.cat([m[:, start:], m[:, :start + n - T]], dim=1).float()  # (M, n)


def draw_transform(transform: str, n: int, cfg: "TimbreConfig", gen: torch.Generator) -> torch.Tensor:
    """``n`` random semitone shifts (``"pitch"``: +-pitch_semitones) or tempo rates (``"stretch"``:
    log-uniform in stretch_rates, avoiding [1/stretch_min_change, stretch_min_change]) -> (n,)."""
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)  # (n,)
    if transform == "pitch":
        return sign * _uniform(gen, (n,), *cfg.pitch_semitones)
    lo, hi = cfg.stretch_rates
    m = cfg.stretch_min_change
    fast = _uniform(gen, (n,), math.log(m), math.log(hi))  # log-rates > 0
    slow = _uniform(gen, (n,), math.log(lo), -math.log(m))  # log-rates < 0
    return torch.exp(torch.where(sign > 0, fast, slow))


def _positive_start(rng: np.random.Generator, length: int, n: int, anchor: int) -> int:
    """A crop start in the same song at least half a crop away from the anchor's, when the song allows."""
    hi = max(0, length - n)
    for _ in range(8):
        s = int(rng.integers(0, hi + 1))
        if abs(s - anchor) >= n // 2:
            return s
    return int(rng.integers(0, hi + 1))


def sample_views(bank: SongBank, anchors: np.ndarray, cfg: TimbreConfig, *, rng: np.random.Generator,
                 gen: torch.Generator, chain: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the log-mel views of one batch and their group ids.

    Views are ordered [anchors, positives, *transformed anchors] (one block of B per active transform);
    ``groups`` follows :func:`view_groups`, with song ids (``positives="song"``) or singer ids. A
    transformed view is the anchor's span in one of the song's pre-rendered variants (see
    :class:`SongBank`). Every view then gets its own random recording chain (unless ``chain`` is False).

    Returns
    -------
    mels : tensor (V, n_mels, crop_frames) log-mel
    groups : long tensor (V,)
    """
    C = cfg.crop_frames
    starts = [int(rng.integers(0, max(0, bank.n_frames[a] - C) + 1)) for a in anchors]  # frames
    crops = [bank.crop(int(a), s, C) for a, s in zip(anchors, starts)]  # anchors: B x (M, C)
    for a, s in zip(anchors, starts):
        song = int(a)
        if cfg.positives == "singer":
            same = bank.by_singer[int(bank.singers[a])]
            others = same[same != a]
            if len(others):
                song = int(rng.choice(others))
        if song == a:
            ps = _positive_start(rng, int(bank.n_frames[a]), C, s)
        else:
            ps = int(rng.integers(0, max(0, bank.n_frames[song] - C) + 1))
        crops.append(bank.crop(song, ps, C))  # positives: B x (M, C)
    for transform, _ in cfg.transforms:
        if transform not in bank.variants:
            raise ValueError(f"the song bank has no {transform} variants (build it with this config)")
        for a, s in zip(anchors, starts):
            value, mel = bank.variants[transform][int(a)][int(rng.integers(len(bank.variants[transform][int(a)])))]
            start = s if transform == "pitch" else int(round(s / value))  # a stretched span starts at s / rate
            crops.append(bank.crop(int(a), start, C, mel=mel))  # transformed anchors: B x (M, C)
    mels = torch.stack(crops)  # (V, M, C) log-mel
    if cfg.chain if chain is None else chain:
        power = recording_chain(10.0 ** mels, cfg, gen, features=bank.features)  # (V, M, C)
        mels = torch.log10(power.clamp_min(bank.features.log_floor))
    if cfg.mask_bands or cfg.mask_frames:
        mels = spec_mask(mels, cfg, gen)
    ids = torch.as_tensor(anchors if cfg.positives == "song" else bank.singers[anchors], dtype=torch.long)
    return mels, view_groups(ids, cfg)


def spec_mask(mels: torch.Tensor, cfg: "TimbreConfig", gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking: one random band range (up to ``cfg.mask_bands`` wide) and one frame range
    (up to ``cfg.mask_frames``) per view are set to the view's mean log-mel. (V, M, T) -> (V, M, T)."""
    V, M, T = mels.shape
    mean = mels.mean(dim=(1, 2), keepdim=True)  # (V, 1, 1)
    out = mels.clone()
    for size, n, axis in ((cfg.mask_bands, M, 1), (cfg.mask_frames, T, 2)):
        if size <= 0:
            continue
        width = torch.randint(0, size + 1, (V,), generator=gen)  # (V,)
        start = (torch.rand(V, generator=gen) * (n - width + 1)).long()  # (V,)
        idx = torch.arange(n)[None, :]  # (1, n)
        hit = (idx >= start[:, None]) & (idx < (start + width)[:, None])  # (V, n)
        hit = hit[:, :, None] if axis == 1 else hit[:, None, :]  # (V, M, 1) or (V, 1, T)
        out = torch.where(hit, mean, out)
    return out


def lr_at(step: int, total: int, cfg: TimbreConfig) -> float:
    """Linear warm-up then cosine decay to 5% of ``cfg.lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def epoch_batches(bank: SongBank, batch_size: int, rng: np.random.Generator, *,
                  songs_per_singer: int = 1) -> list[np.ndarray]:
    """One shuffled pass over the songs as anchors, in full batches (a last partial batch is dropped
    unless it is the only one).

    With ``songs_per_singer`` = K > 1, batches are built from singers: each singer contributes K of its songs
    together (all of them if it has fewer), so that with ``positives="singer"`` every view has several
    same-singer positives (and same-singer negatives are impossible) in its batch ("P x K" sampling).
    """
    if songs_per_singer <= 1:
        order = rng.permutation(len(bank))
    else:
        groups = []
        for s in rng.permutation(sorted(bank.by_singer)):
            songs = rng.permutation(bank.by_singer[int(s)])
            groups.extend(songs[i:i + songs_per_singer] for i in range(0, len(songs), songs_per_singer))
        groups = [groups[i] for i in rng.permutation(len(groups))]
        order = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    n_full = max(1, len(order) // batch_size)
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


def train_epoch(model: TimbreNet, opt: torch.optim.Optimizer, bank: SongBank, cfg: TimbreConfig, *,
                seed: int, epoch: int, step: int, total_steps: int, progress: bool = False) -> tuple[float, int]:
    """One pass over ``bank`` (each song once as an anchor). Sampling is seeded by (seed, epoch), so a
    resumed run repeats an uninterrupted one. Returns (mean loss, global step after the epoch)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng([seed, epoch, 1])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    model.train()
    batches = epoch_batches(bank, cfg.batch_size, rng, songs_per_singer=cfg.songs_per_singer)
    losses = []
    bar = tqdm(batches, desc=f"timbre epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for anchors in bar:
        mels, groups = sample_views(bank, anchors, cfg, rng=rng, gen=gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total_steps, cfg)
        loss = nt_xent(model.project(mels), groups, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return float(np.mean(losses)), step


@torch.no_grad()
def validation_loss(model: TimbreNet, bank: SongBank, cfg: TimbreConfig, *, seed: int,
                    n_batches: int = 4) -> float:
    """Contrastive loss on held-out songs, with fixed (seeded) views; comparable across epochs."""
    if len(bank) < 2:
        return float("nan")
    rng = np.random.default_rng([seed, 999_983])
    gen = torch.Generator().manual_seed(seed + 12345)
    model.eval()
    losses = []
    for anchors in epoch_batches(bank, min(cfg.batch_size, len(bank)), rng,
                                 songs_per_singer=cfg.songs_per_singer)[:n_batches]:
        mels, groups = sample_views(bank, anchors, cfg, rng=rng, gen=gen)
        losses.append(float(nt_xent(model.project(mels), groups, cfg.temperature)))
    return float(np.mean(losses))


def config_fields() -> list[str]:
    """Names of the :class:`TimbreConfig` fields (for CLIs and docs)."""
    return [f.name for f in fields(TimbreConfig)]


__all__ = ["TimbreConfig", "TimbreNet", "TimbreEncoder", "SongBank", "nt_xent", "view_groups",
           "positive_mask", "sample_views", "recording_chain", "train_epoch", "validation_loss"]
