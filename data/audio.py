"""Audio I/O: any wav/flac/ogg/mp3 to mono float32 at 16 kHz (soundfile + soxr), and atomic writes.

Every failure is a :class:`~data.errors.SingrecError` that names the file and the reason, so a catalogue
indexer can log it and go on with the next song.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from data.errors import SingrecError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_SR = 16000
SILENCE_DBFS = -70.0  # peak level below which a file counts as silent


def check_waveform(y: np.ndarray, *, sr: int = DEFAULT_SR, min_seconds: float = 0.5,
                   source: str | Path | None = None) -> np.ndarray:
    """Validate a mono waveform; returns it as contiguous float32.

    Parameters
    ----------
    y : array (N,)
    sr : sample rate of ``y``
    min_seconds : shortest accepted duration
    source : file name or label used in error messages

    Raises
    ------
    SingrecError : empty, non-finite, silent or too short.
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise SingrecError(f"expected mono audio of shape (N,), got shape {y.shape}", source)
    if y.size == 0:
        raise SingrecError("audio is empty (0 samples)", source)
    if not np.all(np.isfinite(y)):
        raise SingrecError("audio contains NaN or infinite samples", source)
    seconds = y.size / sr
    if seconds < min_seconds:
        raise SingrecError(f"audio is too short ({seconds:.2f} s; at least {min_seconds:g} s needed)", source)
    peak = float(np.max(np.abs(y)))
    if peak <= 10 ** (SILENCE_DBFS / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        raise SingrecError(f"audio is silent (peak {level} dBFS)", source)
    return y


def load_audio(path: str | Path, *, sr: int = DEFAULT_SR, min_seconds: float = 0.5,
               max_seconds: float | None = None) -> np.ndarray:
    """Load an audio file as mono float32 at ``sr`` Hz.

    Parameters
    ----------
    path : a .wav, .flac, .ogg or .mp3 file
    sr : target sample rate (resampled with soxr, high quality)
    min_seconds : shorter files are rejected
    max_seconds : if given, only the first ``max_seconds`` are read

    Returns
    -------
    np.ndarray, float32, shape (N,)

    Raises
    ------
    SingrecError : missing, unsupported, unreadable, empty, silent or too-short file (message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise SingrecError("file not found", path)
    if not path.is_file():
        raise SingrecError("not a file", path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise SingrecError(f"unsupported audio type {path.suffix!r} (supported: {', '.join(AUDIO_EXTENSIONS)})", path)
    if path.stat().st_size == 0:
        raise SingrecError("file is empty (0 bytes)", path)
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr = f.samplerate
            frames = -1 if max_seconds is None else int(max_seconds * file_sr)
            y = f.read(frames=frames, dtype="float32", always_2d=True)  # (N, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise SingrecError(f"cannot decode audio ({exc})", path) from exc
    if y.shape[0] == 0:
        raise SingrecError("audio is empty (0 samples)", path)
    y = y.mean(axis=1)  # (N,) mono downmix
    if file_sr != sr:
        y = soxr.resample(y, file_sr, sr, quality="HQ").astype(np.float32)
    return check_waveform(y, sr=sr, min_seconds=min_seconds, source=path)


def save_audio(path: str | Path, y: np.ndarray, *, sr: int = DEFAULT_SR, subtype: str | None = None) -> Path:
    """Write mono audio atomically (temp file in the same folder + rename); format from the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise SingrecError(f"cannot write {path.suffix!r} files (use .wav, .flac or .ogg)", path)
    subtype = subtype or {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.asarray(y, dtype=np.float32), sr, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
