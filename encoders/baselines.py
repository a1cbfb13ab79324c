"""Baseline song embedders, peers of the learned encoders (same :class:`~encoders.base.Embedder` interface).

:class:`MFCCEmbedder` is the classic "bag of frames" timbre baseline: 20 MFCCs of the project log-mel
(DCT-II of the 48 log-mel bands in dB, via ``librosa.feature.mfcc``), summarised by their mean and standard
deviation over time. Because MFCC dimensions have very different scales (c0 is loudness), the statistics are
standardised per dimension before L2 normalisation; call :meth:`MFCCEmbedder.fit` on raw statistics of a
reference set (e.g. the catalogue itself) to set the standardisation, otherwise it is the identity.
"""
from __future__ import annotations

from typing import Sequence

import librosa
import numpy as np
import soxr
import torch

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, FeatureConfig, log_mel
from encoders.base import l2_normalise


class MFCCEmbedder:
    """MFCC mean + std song embedding.

    Parameters
    ----------
    n_mfcc : number of cepstral coefficients (c0 included)
    features : the log-mel configuration the MFCCs are computed from
    mean, scale : optional per-dimension standardisation, shape (2 * n_mfcc,); see :meth:`fit`
    """

    name = "mfcc"
    input_kind = "logmel"

    def __init__(self, n_mfcc: int = 20, *, features: FeatureConfig = DEFAULT_FEATURES,
                 mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        if not 1 <= n_mfcc <= features.n_mels:
            raise SingrecError(f"n_mfcc must be between 1 and {features.n_mels} (got {n_mfcc})")
        self.n_mfcc = n_mfcc
        self.features = features
        self.dim = 2 * n_mfcc
        self.mean = np.zeros(self.dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.scale = np.ones(self.dim, np.float32) if scale is None else np.asarray(scale, np.float32)

    def __repr__(self) -> str:
        return f"MFCCEmbedder(n_mfcc={self.n_mfcc}, dim={self.dim})"

    # ------------------------------------------------------------------ raw statistics
    def raw_logmels(self, mels: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
        """Unstandardised MFCC statistics of log-mels (each (n_mels, T), log10 power).

        Returns
        -------
        float32 (N, dim): means of the ``n_mfcc`` coefficients over time, then their standard deviations.
        """
        out = np.empty((len(mels), self.dim), np.float32)
        for i, mel in enumerate(mels):
            db = 10.0 * np.asarray(mel, dtype=np.float32)  # log10 power -> dB
            if db.ndim != 2 or db.shape[0] != self.features.n_mels or db.shape[1] < 2:
                raise SingrecError(f"expected a log-mel of shape ({self.features.n_mels}, T >= 2), got {db.shape}")
            mfcc = librosa.feature.mfcc(S=db, n_mfcc=self.n_mfcc)  # (n_mfcc, T)
            out[i, :self.n_mfcc] = mfcc.mean(axis=1)
            out[i, self.n_mfcc:] = mfcc.std(axis=1)
        return out

    def raw_waveforms(self, waves: Sequence[np.ndarray], sr: int = 16000) -> np.ndarray:
        """Unstandardised MFCC statistics of mono waveforms at ``sr`` Hz; float32 (N, dim)."""
        return self.raw_logmels([log_mel(self._resampled(y, sr), cfg=self.features) for y in waves])

    def fit(self, raw: np.ndarray) -> "MFCCEmbedder":
        """Set the per-dimension standardisation from raw statistics (N, dim) of a reference set."""
        raw = np.asarray(raw, np.float64)
        if raw.ndim != 2 or raw.shape[1] != self.dim or raw.shape[0] < 2:
            raise SingrecError(f"fit needs raw statistics of shape (N >= 2, {self.dim}), got {raw.shape}")
        self.mean = raw.mean(axis=0).astype(np.float32)
        self.scale = np.maximum(raw.std(axis=0), 1e-6).astype(np.float32)
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Standardise raw statistics and L2-normalise rows; float32 (N, dim)."""
        return l2_normalise((np.asarray(raw, np.float32) - self.mean) / self.scale)

    # ------------------------------------------------------------------ the Embedder interface
    def embed_logmels(self, mels: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
        """Embed songs given as log-mels (n_mels, T_i); float32 (N, dim), unit rows."""
        return self.transform(self.raw_logmels(mels))

    def _resampled(self, y: np.ndarray, sr: int) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise SingrecError(f"expected mono audio of shape (N,), got shape {y.shape}")
        if sr != self.features.sample_rate:
            y = soxr.resample(y, sr, self.features.sample_rate).astype(np.float32)
        return y
