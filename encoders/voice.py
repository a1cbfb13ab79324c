"""Voice attributes for catalogues without labels: the sung range (measured) and gender (predicted).

**Sung range.** An f0 track every 20 ms from the melody encoder's harmonic-sum pitch salience
(:func:`encoders.melody.salience_from_log_power`, C2-C6 on a third-of-a-semitone grid), the peak of each frame
refined by a parabola; a frame is voiced when its peak exceeds ``voicing`` x the song's 95th-percentile peak and
an absolute floor. A song's range is the 5th and 95th percentile of the voiced frames' pitch (MIDI numbers; as
note names with :func:`note_name`), its centre the median; a singer's pools its songs' voiced frames through
their percentiles (the median over songs of each). Written here rather than taken from ``librosa.pyin``, which
agrees with it on real singing (``benchmarks/voice_attributes.py``) but is about 100x slower.

**Voice type** (:func:`voice_type`): from the centre of the range and the gender, with the tessitura centres of
the six classical types (soprano 71, mezzo 67, alto 63.5, tenor 58, baritone 53.5, bass 49.5 MIDI): the type of
that gender whose centre is nearest. Without a gender, the nearest of all six.

**Gender** (:class:`GenderClassifier`): logistic regression on a song's speaker vector (the GE2E part of the
timbre vector, :mod:`encoders.speaker`), probability of ``f``; a singer's probability is the mean of its songs'.
The shipped one is fitted on synthetic singers (``singrec train CATALOGUE --encoder gender``); ``singrec index
--fit-gender COL`` fits one on the labelled singers of the catalogue itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Sequence

import librosa
import numpy as np
import torch
from torch import nn

from data.errors import SingrecError
from encoders.base import l2_normalise
from encoders.melody import MelodyConfig, log_power_spectrum, salience_from_log_power

SPEAKER_DIM = 256  # the speaker part leads the fused timbre vector (encoders/timbre.py)
TESSITURA = {"soprano": ("f", 71.0), "mezzo": ("f", 67.0), "alto": ("f", 63.5),
             "tenor": ("m", 58.0), "baritone": ("m", 53.5), "bass": ("m", 49.5)}  # centre of comfortable range, MIDI


# ---------------------------------------------------------------------------------------------- sung range
@dataclass(frozen=True)
class PitchConfig:
    hop_length: int = 320          # 20 ms at 16 kHz (10 ms gives the same ranges on the synthetic held-out
                                   # catalogue, 0.922 vs 0.923 within a semitone, at half the speed)
    n_fft: int = 1024              # resolves the harmonics of low voices
    bins_per_semitone: int = 3     # salience grid; the peak is refined between bins
    voicing: float = 0.35          # voiced: peak > voicing x the song's 95th-percentile peak ...
    min_salience: float = 1.5      # ... and > this (log-power units; silence ~0, noise ~1, a voice 5-9)
    low_pct: float = 5.0           # the range's lower end, percentile of the voiced frames' pitch
    high_pct: float = 95.0         # its upper end
    min_voiced_s: float = 0.5      # fewer voiced seconds: no range (NaN)


@lru_cache(maxsize=2)
def _salience_config(cfg: PitchConfig) -> MelodyConfig:
    return replace(MelodyConfig(), hop_length=cfg.hop_length, time_pool=1, n_fft=cfg.n_fft,
                   bins_per_semitone=cfg.bins_per_semitone)


def f0_track(wave: np.ndarray, *, sample_rate: int = 16000, cfg: PitchConfig = PitchConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Pitch of every ``hop_length`` frame and whether it is voiced.

    Parameters
    ----------
    wave : (N,) mono float audio at ``sample_rate``

    Returns
    -------
    midi : float64 (T,) MIDI pitch of the salience peak (fractional); voiced : bool (T,)
    """
    scfg = _salience_config(cfg)
    logpow = log_power_spectrum(np.asarray(wave, np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length)  # (F, T)
    sal = salience_from_log_power(logpow, scfg, sample_rate=sample_rate).numpy().astype(np.float64)  # (P, T)
    n_p, n_t = sal.shape
    cols = np.arange(n_t)
    k = sal.argmax(0)  # (T,)
    a, b, c = sal[np.clip(k - 1, 0, n_p - 1), cols], sal[k, cols], sal[np.clip(k + 1, 0, n_p - 1), cols]
    den = a - 2 * b + c
    flat = np.abs(den) <= 1e-9
    offset = np.clip(np.where(flat, 0.0, 0.5 * (a - c) / np.where(flat, 1.0, den)), -0.5, 0.5)  # parabola vertex
    midi = librosa.hz_to_midi(scfg.fmin_hz) + (k + offset) / cfg.bins_per_semitone
    # a peak on the grid's first or last semitone is a tone outside the sung range pulling the comb to the edge
    # (a whistle or hum in a real recording), not a sung pitch: such frames are not voiced
    inside = (k >= cfg.bins_per_semitone) & (k < n_p - cfg.bins_per_semitone)
    voiced = inside & (b > max(cfg.voicing * float(np.quantile(b[inside], 0.95) if inside.any() else 0.0),
                                cfg.min_salience))
    return midi, voiced


def sung_range(wave: np.ndarray, *, sample_rate: int = 16000, cfg: PitchConfig = PitchConfig()) -> np.ndarray:
    """[low, centre, high] of a song's sung pitch (MIDI): the ``low_pct`` / 50th / ``high_pct`` percentiles over
    its voiced frames; NaN when fewer than ``min_voiced_s`` seconds are voiced. float32 (3,)."""
    midi, voiced = f0_track(wave, sample_rate=sample_rate, cfg=cfg)
    if voiced.sum() * cfg.hop_length / sample_rate < cfg.min_voiced_s:
        return np.full(3, np.nan, np.float32)
    return np.percentile(midi[voiced], [cfg.low_pct, 50.0, cfg.high_pct]).astype(np.float32)


class RangeMeter:
    """The sung range as an embedder (:func:`encoders.embed.embed_songs`), so that an index build measures it
    from the audio its encoders decode anyway: ``embed_waveforms(waves)`` -> float32 (B, 3) rows of
    :func:`sung_range` (MIDI, NaN when too little is voiced; not unit rows).

    Parameters
    ----------
    features : the FeatureConfig of the encoders it runs beside (embed_songs decodes once for all at its rate)
    """

    name = "range"
    input_kind = "waveform"
    dim = 3

    def __init__(self, features, cfg: PitchConfig = PitchConfig()):
        self.features = features
        self.cfg = cfg

    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        rows = [sung_range(w, sample_rate=self.features.sample_rate, cfg=self.cfg) for w in waves]
        return np.stack(rows) if rows else np.zeros((0, 3), np.float32)


def note_name(midi: float) -> str:
    """'A2'-style note name of the nearest semitone ('' for NaN)."""
    return "" if not np.isfinite(midi) else librosa.midi_to_note(int(round(float(midi))), unicode=False)


def voice_type(centre: float, gender: str | None = None) -> str:
    """The classical voice type whose tessitura centre is nearest ``centre`` (MIDI), among those of ``gender``
    ('f' / 'm'; None or anything else: all six). '' for NaN."""
    if not np.isfinite(centre):
        return ""
    g = str(gender).lower() if gender is not None else ""
    cands = {t: c for t, (sex, c) in TESSITURA.items() if sex == g} or {t: c for t, (_, c) in TESSITURA.items()}
    return min(cands, key=lambda t: abs(cands[t] - centre))


# ---------------------------------------------------------------------------------------------- gender
def speaker_part(timbre_vectors: np.ndarray) -> np.ndarray:
    """The GE2E speaker vectors inside fused timbre vectors (N, 256 + d) -> (N, 256), unit rows."""
    x = np.asarray(timbre_vectors, np.float32)
    if x.ndim != 2 or x.shape[1] <= SPEAKER_DIM:
        raise SingrecError(f"gender is predicted from fused timbre vectors (> {SPEAKER_DIM} dims, speaker part first); "
                           f"got shape {x.shape}")
    return l2_normalise(x[:, :SPEAKER_DIM])


def gender_labels(values) -> np.ndarray:
    """'f' / 'm' / None for each value of a gender column (f, female, w, woman / m, male, man; any case)."""
    table = {"f": "f", "female": "f", "w": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}
    return np.array([table.get(str(v).strip().lower()) if isinstance(v, str) else None for v in values], object)


@dataclass
class GenderConfig:
    C: float = 1.0                 # inverse L2 strength of the logistic regression
    speaker_key: str = ""          # the speaker vectors it reads (TimbreEncoder.speaker_key: weights and settings)


class GenderClassifier:
    """P(gender = 'f') of songs from their speaker vectors (logistic regression); singers pool their songs."""

    name = "gender"

    def __init__(self, weight: np.ndarray, bias: float, cfg: GenderConfig = GenderConfig()):
        self.weight = np.asarray(weight, np.float64).reshape(-1)
        self.bias = float(bias)
        self.cfg = cfg
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.metrics: dict = {}

    @classmethod
    def fit(cls, speaker: np.ndarray, is_female: Sequence[bool], cfg: GenderConfig = GenderConfig()) -> "GenderClassifier":
        """Fit on speaker vectors (N, 256) and labels; both classes must be present."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(is_female, bool)
        if len(np.unique(y)) < 2:
            raise SingrecError(f"gender labels of one class only ({'f' if y.any() else 'm'}): a classifier needs "
                               "labelled singers of both genders")
        lr = LogisticRegression(C=cfg.C, max_iter=5000).fit(np.asarray(speaker, np.float64), y)
        return cls(lr.coef_[0], float(lr.intercept_[0]), cfg)

    def predict_proba(self, speaker: np.ndarray) -> np.ndarray:
        """P(f) of each row of speaker vectors (N, 256) -> float32 (N,)."""
        z = np.asarray(speaker, np.float64) @ self.weight + self.bias
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    # -- checkpoint (encoders.checkpoint.load_encoder builds it back)
    def module(self) -> nn.Linear:
        lin = nn.Linear(len(self.weight), 1)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(self.weight[None], dtype=torch.float32))
            lin.bias.fill_(self.bias)
        return lin

    def config(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, **_) -> "GenderClassifier":
        sd = ckpt["state_dict"]
        return cls(sd["weight"].double().numpy()[0], float(sd["bias"][0]), GenderConfig(**ckpt["config"]))


def leave_one_singer_out(speaker: np.ndarray, is_female: Sequence[bool], singers: Sequence,
                         cfg: GenderConfig = GenderConfig()) -> float:
    """Singer-level accuracy of classifiers each fitted without one labelled singer and tested on it (singers
    whose removal leaves one class are skipped); NaN if none can be tested."""
    y, s = np.asarray(is_female, bool), np.asarray(singers)
    hits = []
    for name in np.unique(s):
        out = s == name
        if len(np.unique(y[~out])) < 2:
            continue
        p = GenderClassifier.fit(speaker[~out], y[~out], cfg).predict_proba(speaker[out]).mean()
        hits.append((p > 0.5) == bool(y[out][0]))
    return float(np.mean(hits)) if hits else float("nan")


__all__ = ["PitchConfig", "f0_track", "sung_range", "RangeMeter", "note_name", "voice_type", "speaker_part",
           "gender_labels", "GenderConfig", "GenderClassifier", "leave_one_singer_out", "TESSITURA"]
