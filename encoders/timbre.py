"""Timbre encoder: a small TDNN over ~4 s log-mel crops, trained contrastively, pooled to one song vector.

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
from dataclasses import asdict, dataclass, fields
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.features import DEFAULT_FEATURES, FeatureConfig, log_mel, mel_power
from encoders.base import l2_normalise, set_torch_threads

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


def segment(wave: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``wave`` from ``start``, wrapping around cyclically when the song is too short."""
    if start + n <= wave.shape[0]:
        return wave[start:start + n]
    return np.take(wave, np.arange(start, start + n), mode="wrap")


def _uniform(gen: torch.Generator, shape: tuple, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def recording_chain(power: torch.Tensor, cfg: "TimbreConfig", gen: torch.Generator, *,
                    frames_per_second: float) -> torch.Tensor:
    """Apply an independent random recording chain to each mel-power crop (training augmentation).

    The chain mimics what differs between the recordings of a catalogue: a static EQ (a tilt across the
    mel range plus a few Gaussian peaks/notches, in dB), level, a light reverb (an exponential power tail
    per band with a random RT60 and wet level) and additive coloured noise at a random SNR.

    Parameters
    ----------
    power : tensor (V, M, T), mel power (linear, >= 0)
    cfg : the chain ranges (``chain_*`` fields)
    gen : torch random generator

    Returns
    -------
    tensor (V, M, T), mel power
    """
    V, M, T = power.shape
    band = torch.linspace(-0.5, 0.5, M)[None, :]  # (1, M), position across the mel range
    eq_db = _uniform(gen, (V, 1), -cfg.chain_tilt_db, cfg.chain_tilt_db) * band  # (V, M)
    idx = torch.arange(M, dtype=torch.float32)[None, :]  # (1, M)
    for _ in range(cfg.chain_peaks):
        centre = _uniform(gen, (V, 1), 0, M - 1)
        width = _uniform(gen, (V, 1), 1.5, 6.0)  # bands
        gain = _uniform(gen, (V, 1), -cfg.chain_peak_db, cfg.chain_peak_db)
        eq_db = eq_db + gain * torch.exp(-0.5 * ((idx - centre) / width) ** 2)  # (V, M)
    eq_db = eq_db + _uniform(gen, (V, 1), -cfg.chain_gain_db, cfg.chain_gain_db)  # level
    keep = torch.rand((V, 1), generator=gen) < cfg.chain_clean_p  # some views stay untouched
    eq_db = torch.where(keep, torch.zeros_like(eq_db), eq_db)
    out = power * (10.0 ** (eq_db / 10.0))[:, :, None]  # (V, M, T)

    # reverb: y[t] = x[t] + wet * sum_k a^k x[t-k] per band, a = power decay per frame from RT60
    rt60 = _uniform(gen, (V, 1), *cfg.chain_rt60)  # seconds
    wet = _uniform(gen, (V, 1), 0.0, cfg.chain_wet) * (torch.rand((V, 1), generator=gen) < cfg.chain_reverb_p)
    wet = torch.where(keep, torch.zeros_like(wet), wet)
    a = 10.0 ** (-6.0 / (rt60 * frames_per_second))  # (V, 1), -60 dB after rt60
    t = torch.arange(T, dtype=torch.float32)[None, :]  # (1, T)
    kernel = wet * a ** t  # (V, T)
    kernel[:, 0] = 1.0
    n_fft = 2 * T
    spec = torch.fft.rfft(out, n=n_fft) * torch.fft.rfft(kernel, n=n_fft)[:, None, :]  # (V, M, F)
    out = torch.fft.irfft(spec, n=n_fft)[..., :T].clamp_min(0.0)  # (V, M, T)

    # noise: coloured (random tilt), gamma-fluctuating power, at a random SNR to the crop's mean power
    snr_db = _uniform(gen, (V, 1, 1), *cfg.chain_snr_db)
    use = (torch.rand((V, 1, 1), generator=gen) < cfg.chain_noise_p) & ~keep[:, :, None]
    colour = 10.0 ** (_uniform(gen, (V, 1), -20.0, 10.0) * band / 10.0)  # (V, M)
    colour = colour / colour.mean(dim=1, keepdim=True)
    fluct = torch._standard_gamma(torch.full((V, M, T), 4.0)) / 4.0  # (V, M, T), mean 1
    level = out.mean(dim=(1, 2), keepdim=True) / 10.0 ** (snr_db / 10.0)  # (V, 1, 1)
    noise = level * colour[:, :, None] * fluct * use  # (V, M, T)
    return out + noise


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
    stat_channels: int = 256                 # width before attentive statistics pooling
    emb_dim: int = 128                       # the timbre embedding (L2-normalised)
    proj_dim: int = 64                       # projection head output, used by the loss only
    norm: Literal["crop", "band"] = "crop"   # input normalisation: crop mean/std, or also per-band mean
    floor_db: float = 80.0                   # log-mel floor below the crop's peak
    crop_frames: int = 250                   # 4 s at 62.5 frames/s
    hop_frames: int = 125                    # crop hop when embedding a whole song (2 s)
    # --- contrastive pair policy
    temperature: float = 0.1                 # NT-Xent temperature
    positives: Literal["song", "singer"] = "song"  # base positive: another crop of the song / the singer
    pitch: Policy = "neg"                    # pitch-shifted anchor: extra positive, hard negative, or unused
    stretch: Policy = "neg"                  # time-stretched anchor: likewise
    pitch_semitones: tuple[float, float] = (1.0, 3.0)   # |shift| range, random sign
    stretch_rates: tuple[float, float] = (0.7, 1.4)      # tempo factor range (> 1 = faster)
    stretch_min_change: float = 1.1                      # rates within [1/x, x] are not drawn
    # --- random recording chain per view
    chain: bool = True
    chain_clean_p: float = 0.1               # probability a view is left untouched
    chain_tilt_db: float = 12.0              # EQ tilt, +- dB across the mel range
    chain_peaks: int = 3                     # Gaussian EQ peaks / notches per view
    chain_peak_db: float = 9.0               # +- dB per peak
    chain_gain_db: float = 12.0              # +- dB level
    chain_reverb_p: float = 0.6
    chain_rt60: tuple[float, float] = (0.15, 1.0)   # seconds
    chain_wet: float = 0.5                   # max reverb tail level relative to the dry frame
    chain_noise_p: float = 0.6
    chain_snr_db: tuple[float, float] = (10.0, 40.0)
    # --- optimisation
    epochs: int = 30
    batch_size: int = 64                     # anchor songs per step (views per step: 2-4x this)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_train_seconds: float = 30.0          # audio kept in memory per training song

    def __post_init__(self):
        self.dilations = tuple(int(d) for d in self.dilations)
        self.pitch_semitones = tuple(float(v) for v in self.pitch_semitones)
        self.stretch_rates = tuple(float(v) for v in self.stretch_rates)
        self.chain_rt60 = tuple(float(v) for v in self.chain_rt60)
        self.chain_snr_db = tuple(float(v) for v in self.chain_snr_db)
        for name in ("pitch", "stretch"):
            if getattr(self, name) not in ("none", "pos", "neg"):
                raise ValueError(f"{name} must be 'none', 'pos' or 'neg', got {getattr(self, name)!r}")
        if self.positives not in ("song", "singer"):
            raise ValueError(f"positives must be 'song' or 'singer', got {self.positives!r}")
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
        self.expand = ConvBlock(c, cfg.stat_channels, 1)
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
        for block in self.blocks:
            x = block(x)  # (B, C, T/2)
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
    """Multi-positive NT-Xent (SupCon, "L_out") with in-batch negatives.

    For every view ``a`` with at least one positive: mean over its positives ``p`` of
    ``-log(exp(s_ap / t) / sum_{b != a} exp(s_ab / t))`` with cosine similarities ``s``; averaged over
    such views. Views without a positive (``"neg"`` transforms) only appear in the denominators.

    Parameters
    ----------
    z : (V, D) unit-norm projections
    groups : (V,) long group ids (see :func:`view_groups`)
    temperature : softmax temperature
    """
    V = z.shape[0]
    eye = torch.eye(V, dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))  # (V, V)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (V, V)
    pos = positive_mask(groups)  # (V, V)
    n_pos = pos.sum(dim=1)  # (V,)
    has = n_pos > 0
    per_view = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / n_pos[has])  # (V_has,)
    return per_view.mean()


# ----------------------------------------------------------------------------------------------------------
# The encoder (Embedder)
# ----------------------------------------------------------------------------------------------------------

class TimbreEncoder:
    """Song timbre embedder: mean of crop embeddings over the whole song, re-normalised.

    Implements :class:`encoders.base.Embedder` (``name="timbre"``). Get one with
    ``encoders.checkpoint.load_encoder(path)``; ``TimbreEncoder(model=..., features=...)`` wraps a trained net.
    """

    name = "timbre"

    def __init__(self, model: TimbreNet | None = None, *, config: TimbreConfig | None = None,
                 features: FeatureConfig = DEFAULT_FEATURES, batch_crops: int = 256):
        if model is None:
            model = TimbreNet(config or TimbreConfig())
        if model.cfg.n_mels != features.n_mels:
            raise ValueError(f"model expects {model.cfg.n_mels} mel bands, features have {features.n_mels}")
        self.model = model.eval()
        self.config = model.cfg
        self.features = features
        self.batch_crops = batch_crops
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.metrics: dict = {}

    @property
    def dim(self) -> int:
        return self.config.emb_dim

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
        """Embed songs given as (n_mels, T_i) log-mels -> float32 (N, emb_dim), unit rows.

        Crops of all songs are batched together (``batch_crops`` per forward pass).
        """
        set_torch_threads()
        cfg = self.config
        if len(mels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        crops, owner = [], []
        for i, m in enumerate(mels):
            m = torch.as_tensor(m, dtype=torch.float32)
            if m.ndim != 2 or m.shape[0] != cfg.n_mels:
                raise ValueError(f"song {i}: expected a ({cfg.n_mels}, T) log-mel, got {tuple(m.shape)}")
            c = song_crops(m, cfg.crop_frames, cfg.hop_frames)  # (n_i, M, crop)
            crops.append(c)
            owner.append(torch.full((c.shape[0],), i, dtype=torch.long))
        owner_t = torch.cat(owner)  # (n_total,)
        sums = torch.zeros(len(mels), self.dim)  # (N, E)
        with torch.inference_mode():
            flat = torch.cat(crops)  # (n_total, M, crop)
            for s in range(0, flat.shape[0], self.batch_crops):
                emb = self.model(flat[s:s + self.batch_crops])  # (b, E), unit rows
                sums.index_add_(0, owner_t[s:s + self.batch_crops], emb)
        return l2_normalise(sums.numpy())

    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed mono float32 waveforms at ``features.sample_rate`` -> float32 (N, emb_dim), unit rows."""
        mels = [log_mel(np.asarray(w, dtype=np.float32), cfg=self.features) for w in waves]
        return self.embed_logmels(mels)


# ----------------------------------------------------------------------------------------------------------
# Training: views from an in-memory song bank, one epoch, validation
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SongBank:
    """Training audio held in memory: one float32 waveform per song, plus integer song/singer labels."""

    waves: list[np.ndarray]
    singers: np.ndarray  # (n,) int singer index per song

    def __post_init__(self):
        self.singers = np.asarray(self.singers, dtype=np.int64)
        self.lengths = np.array([w.shape[0] for w in self.waves], dtype=np.int64)
        self.by_singer: dict[int, np.ndarray] = {}
        for s in np.unique(self.singers):
            self.by_singer[int(s)] = np.flatnonzero(self.singers == s)

    def __len__(self) -> int:
        return len(self.waves)


def _positive_start(rng: np.random.Generator, length: int, n: int, anchor: int) -> int:
    """A crop start in the same song at least half a crop away from the anchor's, when the song allows."""
    hi = max(0, length - n)
    for _ in range(8):
        s = int(rng.integers(0, hi + 1))
        if abs(s - anchor) >= n // 2:
            return s
    return int(rng.integers(0, hi + 1))


def sample_views(bank: SongBank, anchors: np.ndarray, cfg: TimbreConfig, *, rng: np.random.Generator,
                 gen: torch.Generator, features: FeatureConfig = DEFAULT_FEATURES,
                 chain: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the log-mel views of one batch and their group ids.

    Views are ordered [anchors, positives, *transformed anchors] (one block of B per active transform);
    ``groups`` follows :func:`view_groups`, with song ids (``positives="song"``) or singer ids.

    Returns
    -------
    mels : tensor (V, n_mels, crop_frames) log-mel
    groups : long tensor (V,)
    """
    from data.augment import pitch_shift_batch, time_stretch_batch  # heavy-ish; only training needs it

    B = len(anchors)
    n = (cfg.crop_frames - 1) * features.hop_length  # samples giving exactly crop_frames frames
    starts = [int(rng.integers(0, max(0, bank.lengths[a] - n) + 1)) for a in anchors]
    anchor_audio = np.stack([segment(bank.waves[a], s, n) for a, s in zip(anchors, starts)])  # (B, n)
    pos_audio = []
    for a, s in zip(anchors, starts):
        song = int(a)
        if cfg.positives == "singer":
            same = bank.by_singer[int(bank.singers[a])]
            others = same[same != a]
            if len(others):
                song = int(rng.choice(others))
        if song == a:
            ps = _positive_start(rng, int(bank.lengths[a]), n, s)
        else:
            ps = int(rng.integers(0, max(0, bank.lengths[song] - n) + 1))
        pos_audio.append(segment(bank.waves[song], ps, n))
    views = [torch.from_numpy(anchor_audio), torch.from_numpy(np.stack(pos_audio))]  # 2 x (B, n)
    for transform, _ in cfg.transforms:
        sign = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0)  # (B,)
        if transform == "pitch":
            steps = sign * _uniform(gen, (B,), *cfg.pitch_semitones)
            views.append(pitch_shift_batch(views[0], steps, sr=features.sample_rate))  # (B, n)
        else:
            lo, hi = cfg.stretch_rates
            m = cfg.stretch_min_change
            fast = _uniform(gen, (B,), math.log(m), math.log(hi))  # log-rates, > 1
            slow = _uniform(gen, (B,), math.log(lo), -math.log(m))  # log-rates, < 1
            rates = torch.exp(torch.where(sign > 0, fast, slow))  # (B,)
            n_src = int(math.ceil(n * hi)) + 1  # enough source audio for the fastest rate
            src = torch.from_numpy(np.stack([segment(bank.waves[a], s, n_src) for a, s in zip(anchors, starts)]))
            views.append(time_stretch_batch(src, rates, length=n))  # (B, n)
    audio = torch.cat(views)  # (V, n)
    power = mel_power(audio, cfg=features)  # (V, M, crop)
    if cfg.chain if chain is None else chain:
        power = recording_chain(power, cfg, gen, frames_per_second=features.frames_per_second)
    mels = torch.log10(power.clamp_min(features.log_floor))  # (V, M, crop)
    ids = torch.as_tensor(anchors if cfg.positives == "song" else bank.singers[anchors], dtype=torch.long)
    return mels, view_groups(ids, cfg)


def lr_at(step: int, total: int, cfg: TimbreConfig) -> float:
    """Linear warm-up then cosine decay to 5% of ``cfg.lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def epoch_batches(n_songs: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled pass over the training songs, in full batches (the last partial batch is dropped
    unless it is the only one)."""
    order = rng.permutation(n_songs)
    n_full = max(1, n_songs // batch_size)
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


def train_epoch(model: TimbreNet, opt: torch.optim.Optimizer, bank: SongBank, cfg: TimbreConfig, *,
                seed: int, epoch: int, step: int, total_steps: int,
                features: FeatureConfig = DEFAULT_FEATURES, progress: bool = False) -> tuple[float, int]:
    """One pass over ``bank`` (each song once as an anchor). Sampling is seeded by (seed, epoch), so a
    resumed run repeats an uninterrupted one. Returns (mean loss, global step after the epoch)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng([seed, epoch, 1])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    model.train()
    batches = epoch_batches(len(bank), cfg.batch_size, rng)
    losses = []
    bar = tqdm(batches, desc=f"timbre epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for anchors in bar:
        mels, groups = sample_views(bank, anchors, cfg, rng=rng, gen=gen, features=features)
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
                    features: FeatureConfig = DEFAULT_FEATURES, n_batches: int = 4) -> float:
    """Contrastive loss on held-out songs, with fixed (seeded) views; comparable across epochs."""
    if len(bank) < 2:
        return float("nan")
    rng = np.random.default_rng([seed, 999_983])
    gen = torch.Generator().manual_seed(seed + 12345)
    model.eval()
    losses = []
    for anchors in epoch_batches(len(bank), min(cfg.batch_size, len(bank)), rng)[:n_batches]:
        mels, groups = sample_views(bank, anchors, cfg, rng=rng, gen=gen, features=features)
        losses.append(float(nt_xent(model.project(mels), groups, cfg.temperature)))
    return float(np.mean(losses))


def config_fields() -> list[str]:
    """Names of the :class:`TimbreConfig` fields (for CLIs and docs)."""
    return [f.name for f in fields(TimbreConfig)]


__all__ = ["TimbreConfig", "TimbreNet", "TimbreEncoder", "SongBank", "nt_xent", "view_groups",
           "positive_mask", "sample_views", "recording_chain", "train_epoch", "validation_loss"]
