"""Real-voice front end: the GE2E speaker encoder whose weights ship inside the ``resemblyzer`` wheel (frozen).

singrec's own encoders learn from a synthesizer; what makes two *real* voices sound alike is better known by a
speaker encoder trained on thousands of real speakers. Resemblyzer (Apache-2.0) carries one: a generalised
end-to-end (GE2E, Wan et al. 2018) encoder, three LSTM layers of 256 over 40-band mel power frames (25 ms
windows every 10 ms), a linear layer, ReLU and L2 normalisation, applied to 1.6-s "partials". Its 17 MB
``pretrained.pt`` lies in the installed package, so nothing is downloaded; only the network is re-declared here,
and the weights are read from the package folder with ``torch.load(weights_only=True)`` (importing
``resemblyzer`` itself would also import its voice-activity detector, which singrec does not use).

A song's speaker vector is the mean of its partials' embeddings, re-normalised (as Resemblyzer's
``embed_utterance``), with two differences that make it usable on catalogues:

- **bounded cost**: a long song is read through at most ``max_partials`` partials spread evenly over it (the
  LSTM is the most expensive stage of indexing; 24 partials cover 38 s of a 3-minute song);
- **level**: each song is scaled so that its active part (10-ms frames no more than 40 dB below its loudest
  ones) has ``level_dbfs`` RMS, because the network reads linear mel power and is not gain invariant. On the
  real-singing dev set the level moves singer top-1 from 0.924 (-30 dBFS) to 0.969 (-20) and 0.955 (-14):
  BENCHMARKS.md, "Real singing". Pauses do not count, so a song with long rests is not turned up too far.

:class:`encoders.timbre.TimbreEncoder` fuses this vector with its own contrastively trained TDNN.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.errors import SingrecError
from data.features import FeatureConfig, mel_power
from encoders.base import file_sha256

log = logging.getLogger(__name__)

PACKAGE = "resemblyzer"       # the registry package that carries the weights
WEIGHTS_FILE = "pretrained.pt"
# Resemblyzer's mel: 25 ms periodic-Hann windows every 10 ms, 40 Slaney mel bands 0-8 kHz, linear power
SPEAKER_FEATURES = FeatureConfig(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)


@dataclass(frozen=True)
class SpeakerConfig:
    partial_frames: int = 160     # 1.6 s partials (the length the network was trained on)
    hop_frames: int = 80          # a partial every 0.8 s (50 % overlap)
    max_partials: int = 24        # at most this many partials per song, spread evenly (bounds indexing cost)
    level_dbfs: float = -20.0     # RMS level of a song's active frames after scaling (before the mel)
    batch_partials: int = 128     # partials per forward pass


class GE2E(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network: (B, T, 40) mel power -> (B, 256) unit-norm embedding."""

    def __init__(self, n_mels: int = 40, hidden: int = 256, layers: int = 3, emb_dim: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, emb_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)  # hidden: (layers, B, H)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)  # (B, E)


def weights_path() -> Path:
    """The GE2E weights inside the installed ``resemblyzer`` package (found without importing it).

    Raises
    ------
    SingrecError : the package is not installed, or its folder has no weights file
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SingrecError(f"the real-voice front end needs the '{PACKAGE}' package, which carries its weights: "
                           f"pip install {PACKAGE} (or reinstall singrec)")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise SingrecError(f"the installed '{PACKAGE}' package has no {WEIGHTS_FILE}; reinstall it", path)
    return path


@lru_cache(maxsize=1)
def load_ge2e() -> tuple[GE2E, str]:
    """The frozen GE2E network in eval mode, and the sha256 of the weights file (shared by every encoder)."""
    path = weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        net = GE2E()
        # the file also holds GE2E's training-only similarity scale and bias, which the encoder does not use
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")}, strict=True)
    except Exception as exc:
        raise SingrecError(f"cannot read the GE2E weights ({type(exc).__name__}: {exc})", path) from exc
    net.eval().requires_grad_(False)
    return net, file_sha256(path)


def partial_starts(n_frames: int, cfg: SpeakerConfig) -> np.ndarray:
    """Start frames of a song's partials: every ``hop_frames`` (the last flush with the end), thinned evenly to
    at most ``max_partials``. A song shorter than one partial has the single start 0 (it is tiled)."""
    last = max(0, n_frames - cfg.partial_frames)
    starts = np.arange(0, last + 1, cfg.hop_frames)
    if starts[-1] != last:
        starts = np.append(starts, last)
    if len(starts) > cfg.max_partials:
        starts = starts[np.round(np.linspace(0, len(starts) - 1, cfg.max_partials)).astype(int)]
    return starts


def active_power(wave: torch.Tensor, *, frame: int = 160, range_db: float = 40.0) -> torch.Tensor:
    """Mean power (mean square) of a waveform's active 10-ms frames: those no more than ``range_db`` below the
    95th percentile of the frame powers. wave: (N,) -> scalar tensor (>= 1e-12)."""
    n = max(1, wave.shape[0] // frame)
    p = torch.nn.functional.pad(wave, (0, n * frame - wave.shape[0]))[:n * frame].reshape(n, frame).square().mean(1)
    loud = torch.quantile(p, 0.95)
    return p[p >= loud * 10.0 ** (-range_db / 10.0)].mean().clamp_min(1e-12)


def song_partials(wave: np.ndarray | torch.Tensor, cfg: SpeakerConfig) -> torch.Tensor:
    """A song's level-normalised mel-power partials -> (n, partial_frames, 40), time-major as the LSTM reads.

    Parameters
    ----------
    wave : (N,) mono float audio at 16 kHz
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    power = mel_power(x, cfg=SPEAKER_FEATURES) * (10.0 ** (cfg.level_dbfs / 10.0) / active_power(x))  # (40, T)
    n = cfg.partial_frames
    if power.shape[1] < n:
        power = power.repeat(1, -(-n // power.shape[1]))[:, :n]  # tile a short song to one partial
    starts = torch.as_tensor(partial_starts(power.shape[1], cfg))
    return power.unfold(1, n, 1)[:, starts].permute(1, 2, 0).contiguous()  # (40, P, n) -> (P, n, 40)


def speaker_vectors(waves: Sequence[np.ndarray], cfg: SpeakerConfig = SpeakerConfig()) -> np.ndarray:
    """Song speaker vectors: the mean GE2E embedding of each song's partials, re-normalised.

    Parameters
    ----------
    waves : mono float32 waveforms at 16 kHz

    Returns
    -------
    float32 (N, 256), unit rows
    """
    net, _ = load_ge2e()
    if len(waves) == 0:
        return np.zeros((0, 256), dtype=np.float32)
    parts = [song_partials(w, cfg) for w in waves]
    owner = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])  # (P_total,)
    flat = torch.cat(parts)  # (P_total, n, 40)
    sums = torch.zeros(len(waves), 256)
    with torch.inference_mode():
        for s in range(0, len(flat), cfg.batch_partials):
            sums.index_add_(0, owner[s:s + cfg.batch_partials], net(flat[s:s + cfg.batch_partials]))
    return F.normalize(sums, dim=-1).numpy().astype(np.float32)


__all__ = ["SpeakerConfig", "GE2E", "SPEAKER_FEATURES", "weights_path", "load_ge2e", "partial_starts",
           "song_partials", "speaker_vectors"]
