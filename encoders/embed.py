"""Embed songs with several encoders at once: each song is loaded (and its log-mel computed) once.

``embed_songs(paths_or_waveforms, {"timbre": t, "melody": m})`` returns ``(timbre (N, d_t), melody (N, d_m))``;
any other set of embedders gives ``{name: (N, d)}``. Files are decoded by a small thread pool ahead of the
model (soundfile and soxr release the GIL), songs go through the encoders in batches, and a tqdm bar shows
progress.

Encoders declare what they read with ``input_kind``: ``"logmel"`` (the default: ``embed_logmels`` gets the
shared (n_mels, T) log-mels) or ``"waveform"`` (``embed_waveforms`` gets the decoded audio, e.g. the melody
encoder, which needs finer pitch detail than the 48-band log-mel has).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Literal, Mapping, NamedTuple, Sequence

import numpy as np

from data.audio import check_waveform, load_audio
from data.errors import SingrecError
from data.features import FeatureConfig, log_mel
from encoders.base import one_thread_per_process, set_torch_threads, worker_processes

log = logging.getLogger(__name__)


class Failure(NamedTuple):
    """A song that could not be embedded: its position in the input, its path (or label) and why."""

    index: int
    path: str
    reason: str


def _named(encoders) -> dict:
    if isinstance(encoders, Mapping):
        named = dict(encoders)
    else:
        named = {}
        for enc in encoders:
            if enc.name in named:
                raise SingrecError(f"two encoders are both named {enc.name!r}; pass a dict to name them")
            named[enc.name] = enc
    if not named:
        raise SingrecError("no encoders given")
    return named


def _common_features(named: dict) -> FeatureConfig:
    feats = {name: enc.features for name, enc in named.items()}
    first = next(iter(feats.values()))
    for name, f in feats.items():
        if f != first:
            raise SingrecError(f"encoders disagree on features: {next(iter(feats))} uses {first}, "
                               f"{name} uses {f}")
    return first


def _load(item, index: int, sr: int, min_seconds: float):
    """(index, label, wave or None, reason or None) for one path or waveform."""
    if isinstance(item, (str, Path)):
        label = str(item)
        try:
            return index, label, load_audio(item, sr=sr, min_seconds=min_seconds), None
        except SingrecError as exc:
            return index, label, None, exc.reason
    label = f"waveform #{index}"
    try:
        return index, label, check_waveform(np.asarray(item), sr=sr, min_seconds=min_seconds, source=label), None
    except SingrecError as exc:
        return index, label, None, exc.reason


def _loaded(items: Sequence, sr: int, min_seconds: float, workers: int) -> Iterator[tuple]:
    """Load items in input order, ``workers`` threads ahead (inline when workers <= 1)."""
    if workers <= 1:
        for i, item in enumerate(items):
            yield _load(item, i, sr, min_seconds)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="singrec-load") as pool:
        pending = []
        it = iter(enumerate(items))
        for i, item in it:  # keep a bounded window of futures in flight
            pending.append(pool.submit(_load, item, i, sr, min_seconds))
            if len(pending) >= 4 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def embed_songs(songs: Sequence[str | Path | np.ndarray], encoders, *, batch_size: int = 16,
                progress: bool = True, workers: int = 2, processes: int = 1,
                on_error: Literal["raise", "skip"] = "raise", min_seconds: float = 0.5):
    """Embed songs (files or mono float32 waveforms at the encoders' sample rate) with every encoder.

    Parameters
    ----------
    songs : audio file paths, or waveforms (np arrays of shape (N,)), or a mix
    encoders : ``{"timbre": enc, "melody": enc}``, any ``{name: Embedder}``, or a list of Embedders (keyed
        by their ``name``); all must share one FeatureConfig
    batch_size : songs per encoder call (crops of a batch are embedded together)
    progress : show a tqdm bar
    workers : audio-decoding threads running ahead of the encoders (<= 1: decode inline)
    processes : processes embedding chunks of the songs side by side, one thread each (for encoders that one
        process cannot spread over the cores, such as numpy work on one song at a time);
        1: all in this process. The rows are the same either way. The processes are spawned (see
        :func:`encoders.base.worker_processes`), so a script that asks for them needs the
        ``if __name__ == "__main__":`` guard.
    on_error : ``"raise"``: the first unreadable song raises a SingrecError naming it (with ``processes`` > 1,
        once all songs are read); ``"skip"``: unreadable songs are left out and returned as a list of
        :class:`Failure`
    min_seconds : shorter songs are unreadable

    Returns
    -------
    With exactly the encoders ``timbre`` and ``melody``: ``(timbre, melody)``, else ``{name: array}``;
    arrays are float32 (n_ok, dim) with unit rows, in input order. With ``on_error="skip"`` the failures
    list is appended: ``(timbre, melody, failures)`` or ``(dict, failures)``; the rows then belong to the
    inputs whose index is not in ``failures``.
    """
    if on_error not in ("raise", "skip"):
        raise SingrecError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    named = _named(encoders)
    features = _common_features(named)
    read = dict(batch_size=batch_size, workers=workers, min_seconds=min_seconds)
    if processes > 1 and len(songs) > batch_size:
        arrays, failures = _embed_in_processes(songs, named, features, processes, progress=progress, **read)
        if on_error == "raise" and failures:
            raise SingrecError(failures[0].reason, failures[0].path)
    else:
        set_torch_threads()
        arrays, failures = _embed(songs, named, features, progress=progress, stop_at_failure=on_error == "raise",
                                  **read)
    result = (arrays["timbre"], arrays["melody"]) if set(arrays) == {"timbre", "melody"} else arrays
    if on_error == "skip":
        return (*result, failures) if isinstance(result, tuple) else (result, failures)
    return result


def _embed(songs: Sequence, named: dict, features: FeatureConfig, *, batch_size: int, progress: bool, workers: int,
           min_seconds: float, stop_at_failure: bool) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """:func:`embed_songs` in this process: ``({name: (n_ok, dim) rows}, failures)``; with ``stop_at_failure``
    the first unreadable song raises."""
    from tqdm.auto import tqdm

    kinds = {name: getattr(enc, "input_kind", "logmel") for name, enc in named.items()}
    need_mel = any(k != "waveform" for k in kinds.values())

    chunks: dict[str, list[np.ndarray]] = {name: [] for name in named}
    failures: list[Failure] = []
    batch: list[np.ndarray] = []

    def flush():
        if not batch:
            return
        mels = [log_mel(w, cfg=features) for w in batch] if need_mel else None
        for name, enc in named.items():
            out = enc.embed_waveforms(batch) if kinds[name] == "waveform" else enc.embed_logmels(mels)
            chunks[name].append(np.asarray(out, dtype=np.float32))
        batch.clear()

    bar = tqdm(total=len(songs), desc="embedding", unit="song", disable=not progress)
    try:
        for index, label, wave, reason in _loaded(songs, features.sample_rate, min_seconds, workers):
            if wave is None:
                if stop_at_failure:
                    raise SingrecError(reason, label)
                log.warning("skipping %s: %s", label, reason)
                failures.append(Failure(index, label, reason))
            else:
                batch.append(wave)
                if len(batch) >= batch_size:
                    flush()
            bar.update(1)
        flush()
    finally:
        bar.close()
    return _stacked(chunks, named), failures


def _stacked(chunks: dict[str, list[np.ndarray]], named: dict) -> dict[str, np.ndarray]:
    """Each encoder's row blocks as one (n, dim) float32 array (empty blocks: (0, dim))."""
    return {name: (np.concatenate(c) if c else np.zeros((0, named[name].dim), np.float32))
            for name, c in chunks.items()}


_PROCESS_ENCODERS: dict = {}  # the encoders of an :func:`_embed_in_processes` worker process


def _embedding_process(named: dict) -> None:
    """Worker-process initializer: one thread, and the encoders it embeds with."""
    one_thread_per_process()
    _PROCESS_ENCODERS.update(named)


def _embed_chunk(songs: Sequence, features: FeatureConfig, read: dict) -> tuple[dict[str, np.ndarray], list[Failure]]:
    return _embed(songs, _PROCESS_ENCODERS, features, progress=False, stop_at_failure=False, **read)


def _embed_in_processes(songs: Sequence, named: dict, features: FeatureConfig, processes: int, *, progress: bool,
                        **read) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """:func:`_embed` over chunks of the songs in ``processes`` processes, in input order; failures indexed into
    ``songs``. Chunks: at least a batch, at most 256 songs (the progress bar moves per chunk), and at least four
    per process where the songs allow, so that the processes finish together."""
    from functools import partial

    from tqdm.auto import tqdm

    chunk = min(256, max(read["batch_size"], -(-len(songs) // (4 * processes))))
    starts = range(0, len(songs), chunk)
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in named}
    failures: list[Failure] = []
    with (worker_processes(processes, initializer=_embedding_process, initargs=(named,)) as pool,
          tqdm(total=len(songs), desc="embedding", unit="song", disable=not progress) as bar):
        work = partial(_embed_chunk, features=features, read=read)
        for start, (rows, failed) in zip(starts, pool.map(work, [songs[s:s + chunk] for s in starts])):
            for name, block in rows.items():
                blocks[name].append(block)
            failures += [f._replace(index=f.index + start) for f in failed]
            bar.update(min(chunk, len(songs) - start))
    return _stacked(blocks, named), failures
