"""Train the encoders on a catalogue: ``train(catalogue, out_dir, ...)`` (the function behind ``singrec train``).

Timbre: the catalogue's songs are split into train / validation BY SONG (seeded, stratified by singer so
that every singer with two or more songs keeps at least one training song), their audio is loaded once
into memory, and :mod:`encoders.timbre` trains for ``epochs`` passes. After every epoch the full training
state (weights, optimizer, epoch, step, rng states, history) is written atomically to
``out_dir/timbre.state.pt``; re-running the same call continues from there. At the end
``out_dir/timbre.pt`` is written with :func:`encoders.checkpoint.save_checkpoint` (weights, config, features,
validation metrics, a data summary with the manifest's sha256, and the exact command).

Melody: delegated to :func:`encoders.melody.train_melody`, which writes ``out_dir/melody.pt``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from data.audio import load_audio
from data.catalogue import Catalogue
from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, FeatureConfig
from encoders.base import retrieval_metrics, set_torch_threads
from encoders.checkpoint import DEFAULT_CHECKPOINTS, atomic_torch_save, file_sha256, read_checkpoint, save_checkpoint
from encoders.timbre import (Policy, SongBank, TimbreConfig, TimbreEncoder, TimbreNet, train_epoch,
                             validation_loss)

log = logging.getLogger(__name__)

STATE_FORMAT = "singrec-train-state/1"
# config fields that may change between a run and its resumption (everything else must match)
RESUMABLE_CHANGES = ("epochs",)


# ----------------------------------------------------------------------------------------------------------
# Data: split, loading, retrieval metrics
# ----------------------------------------------------------------------------------------------------------

def split_by_song(songs: pd.DataFrame, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded train / validation split of ``song_id``s, stratified by singer.

    Each singer contributes ``round(n * val_fraction)`` songs to validation, but always keeps at least one
    training song (a singer with a single song is train-only). Returns (train ids, val ids), each sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SingrecError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 7])
    train, val = [], []
    for _, g in songs.sort_values("song_id").groupby("singer", sort=True):
        ids = g["song_id"].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_val = min(int(round(len(ids) * val_fraction)), len(ids) - 1)
        val.extend(ids[:n_val])
        train.extend(ids[n_val:])
    return sorted(train), sorted(val)


def load_waves(paths: list[str], *, sr: int, max_seconds: float | None = None,
               progress: bool = True) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
    """Load every file once (mono float32 at ``sr``); unreadable files are logged and returned as None.

    Returns (waves aligned with ``paths``, [(path, reason)] failures).
    """
    from tqdm.auto import tqdm

    waves, failures = [], []
    for p in tqdm(paths, desc="loading audio", unit="song", disable=not progress):
        try:
            waves.append(load_audio(p, sr=sr, max_seconds=max_seconds))
        except SingrecError as exc:
            log.warning("skipping %s: %s", p, exc.reason)
            waves.append(None)
            failures.append((str(p), exc.reason))
    return waves, failures


BANK_FORMAT = "singrec-timbre-bank/1"


def _manifest_sha(cat: Catalogue) -> str:
    src = Path(cat.source)
    return file_sha256(src) if src.is_file() else cat.fingerprint()


def _bank_key(cfg: TimbreConfig, features: FeatureConfig, seed: int, sha: str, train_ids, val_ids) -> str:
    """Identifies a song bank: the data, the split, and everything that shapes the rendered variants."""
    parts = {"format": BANK_FORMAT, "sha": sha, "seed": seed, "features": features.to_dict(),
             "train": list(train_ids), "val": list(val_ids), "max_seconds": cfg.max_train_seconds,
             "transforms": [t for t, _ in cfg.transforms], "variants": cfg.transform_variants,
             "pitch_semitones": cfg.pitch_semitones, "stretch_rates": cfg.stretch_rates,
             "stretch_min_change": cfg.stretch_min_change}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _read_bank_cache(path: Path):
    if not path.is_file():
        return None
    try:
        c = torch.load(path, map_location="cpu", weights_only=True)
        if c.get("format") != BANK_FORMAT:
            raise ValueError(f"format {c.get('format')!r}")
        return (SongBank.from_state(c["train"]), SongBank.from_state(c["val"]), list(c["train_ids"]),
                list(c["val_ids"]), [tuple(f) for f in c["failures"]])
    except Exception as exc:  # a stale or truncated cache is rebuilt, never fatal
        log.warning("ignoring unreadable song-bank cache %s (%s)", path, exc)
        return None


def _build_banks(cat: Catalogue, train_ids: list[str], val_ids: list[str], cfg: TimbreConfig, *,
                 features: FeatureConfig, seed: int, progress: bool):
    """Load the audio once and build the train / val song banks (log-mels + transform variants)."""
    songs = cat.songs.set_index("song_id")
    ids = train_ids + val_ids
    waves, failures = load_waves(songs.loc[ids, "path"].tolist(), sr=features.sample_rate,
                                 max_seconds=cfg.max_train_seconds, progress=progress)
    ok = {sid: w for sid, w in zip(ids, waves) if w is not None}
    train_ids = [s for s in train_ids if s in ok]
    val_ids = [s for s in val_ids if s in ok]
    if len(train_ids) < 2:
        raise SingrecError(f"too few readable training songs ({len(train_ids)}) to train the timbre encoder",
                           cat.source)
    singer_codes = {s: i for i, s in enumerate(sorted(cat.songs["singer"].unique()))}
    train_bank = SongBank([ok[s] for s in train_ids], [singer_codes[songs.at[s, "singer"]] for s in train_ids],
                          features=features, cfg=cfg, seed=seed, progress=progress)
    val_bank = SongBank([ok[s] for s in val_ids], [singer_codes[songs.at[s, "singer"]] for s in val_ids],
                        features=features, cfg=cfg, seed=seed + 1, progress=progress)
    return train_bank, val_bank, train_ids, val_ids, failures


def _data_summary(cat: Catalogue, train_ids: list[str], val_ids: list[str], failures: list, sha: str) -> dict:
    src = Path(cat.source)
    return {"catalogue": str(src), "manifest_sha256": sha, "n_songs": len(cat),
            "n_singers": int(cat.songs["singer"].nunique()), "n_train_songs": len(train_ids),
            "n_val_songs": len(val_ids), "n_failed": len(failures),
            "failed": [f"{p}: {r}" for p, r in failures[:20]]}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("singrec", "__main__.py", "cli.py")):
        argv[0] = "singrec" if argv[0].endswith("singrec") else argv[0]
    return shlex.join(argv)


# ----------------------------------------------------------------------------------------------------------
# Timbre
# ----------------------------------------------------------------------------------------------------------

def _state_matches(state: dict, cfg: TimbreConfig, data: dict, seed: int, val_ids: list[str],
                   init_sha: str | None) -> str | None:
    """Why a saved training state cannot be resumed with these settings (None if it can)."""
    try:  # fields added since the state was written take their default; lists come back as tuples
        old = asdict(TimbreConfig.from_dict(dict(state["config"])))
    except (TypeError, ValueError) as exc:
        return f"settings of another trainer version ({exc})"
    new = asdict(cfg)
    diffs = [k for k in new if k not in RESUMABLE_CHANGES and old[k] != new[k]]
    if diffs:
        return "different settings: " + ", ".join(f"{k}={old[k]!r}->{new[k]!r}" for k in diffs)
    if state["seed"] != seed:
        return f"different seed ({state['seed']} -> {seed})"
    if state["data"]["manifest_sha256"] != data["manifest_sha256"]:
        return "the catalogue changed"
    if list(state["val_ids"]) != list(val_ids):
        return "a different validation split"
    if state.get("init_sha256") != init_sha:
        return "different starting weights (--init)"
    return None


def train_timbre(cat: Catalogue, out_dir: Path, cfg: TimbreConfig, *, seed: int = 0,
                 val_fraction: float = 0.2, resume: bool = True, progress: bool = True,
                 command: str | None = None, features: FeatureConfig = DEFAULT_FEATURES,
                 eval_every: int = 0, cache_dir: str | Path | None = None, init: str | Path | None = None) -> Path:
    """Train (or resume) the timbre encoder; writes ``out_dir/timbre.state.pt`` each epoch and
    ``out_dir/timbre.pt`` at the end. Returns the checkpoint path.

    ``init``: a timbre checkpoint whose TDNN weights training starts from (fine-tuning; its architecture must
    match ``cfg``), or None to start from random weights.

    ``eval_every`` > 0 also logs validation retrieval every that many epochs (it costs an embedding pass).
    The in-memory song bank (log-mels and rendered pitch / stretch variants) is cached in ``cache_dir``
    (default ``out_dir``) as ``timbre.bank-<key>.pt``, so that resuming, or another run on the same data
    with the same transforms, does not load and render the audio again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, state_path = out_dir / "timbre.pt", out_dir / "timbre.state.pt"
    _seed_everything(seed)

    train_ids, val_ids = split_by_song(cat.songs, val_fraction, seed)
    sha = _manifest_sha(cat)
    cache = Path(cache_dir or out_dir) / f"timbre.bank-{_bank_key(cfg, features, seed, sha, train_ids, val_ids)}.pt"
    t0 = time.perf_counter()
    banks = _read_bank_cache(cache)
    if banks is None:
        train_bank, val_bank, train_ids, val_ids, failures = _build_banks(
            cat, train_ids, val_ids, cfg, features=features, seed=seed, progress=progress)
        atomic_torch_save({"format": BANK_FORMAT, "train": train_bank.state(), "val": val_bank.state(),
                           "train_ids": train_ids, "val_ids": val_ids, "failures": failures}, cache)
        log.info("timbre: song bank ready in %.0f s (%s variants: %d per song), cached in %s",
                 time.perf_counter() - t0, "+".join(t for t, _ in cfg.transforms) or "no",
                 cfg.transform_variants if cfg.transforms else 0, cache)
    else:
        train_bank, val_bank, train_ids, val_ids, failures = banks
        log.info("timbre: song bank read from %s", cache)
    data = _data_summary(cat, train_ids, val_ids, failures, sha)
    log.info("timbre: %d train / %d val songs, %d singers, %d unreadable", len(train_ids), len(val_ids),
             data["n_singers"], len(failures))

    model = TimbreNet(cfg)
    init_sha = None
    if init is not None:
        try:
            model.load_state_dict(read_checkpoint(init)["state_dict"], strict=True)
        except RuntimeError as exc:
            raise SingrecError(f"cannot start from these weights: their TDNN differs from the settings ({exc})",
                               init) from exc
        init_sha = file_sha256(init)
        log.info("timbre: starting from %s", init)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_bank) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    epoch, step, seconds, history = 0, 0, 0.0, []

    if resume and state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
        except Exception as exc:
            raise SingrecError(f"cannot resume from this training state ({exc}); "
                               "delete it or pass resume=False", state_path) from exc
        why = _state_matches(state, cfg, data, seed, val_ids, init_sha)
        if why:
            raise SingrecError(f"cannot resume: this run was started with {why}; use another output folder "
                               "or resume=False (--no-resume) to start over", state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, step, seconds, history = state["epoch"], state["step"], state["seconds"], list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_tuple(state["rng"]["python"]))
        log.info("timbre: resuming from epoch %d/%d (%s)", epoch, cfg.epochs, state_path)
        if epoch >= cfg.epochs and ckpt_path.is_file():
            log.info("timbre: already trained for %d epochs: %s", epoch, ckpt_path)
            return ckpt_path

    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    bar = tqdm(range(epoch, cfg.epochs), desc="timbre", unit="epoch", disable=not progress,
               initial=epoch, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        train_loss, step = train_epoch(model, opt, train_bank, cfg, seed=seed, epoch=epoch, step=step,
                                       total_steps=total_steps, progress=progress)
        val_loss = validation_loss(model, val_bank, cfg, seed=seed)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                  "seconds": time.perf_counter() - t0}
        if eval_every and (epoch + 1) % eval_every == 0 and epoch + 1 < cfg.epochs:
            record.update(_val_retrieval(model, train_bank, val_bank, features))
        history.append(record)
        seconds += time.perf_counter() - t0
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        log.info("timbre epoch %d/%d: %s", epoch + 1, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        atomic_torch_save({
            "format": STATE_FORMAT, "config": asdict(cfg), "seed": seed, "data": data, "val_ids": val_ids,
            "init_sha256": init_sha,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
            "seconds": seconds, "history": history,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }, state_path)
    epochs_done = history[-1]["epoch"] if history else 0

    model.eval()
    metrics = {"val_loss": history[-1]["val_loss"] if history else float("nan"),
               "train_loss": history[-1]["train_loss"] if history else float("nan"),
               **_val_retrieval(model, train_bank, val_bank, features), "history": history}
    log.info("timbre: val singer top-1 %.3f, mAP %.3f (%d queries)", metrics["val_singer_top1"],
             metrics["val_singer_map"], metrics["val_n_queries"])
    train_info = {"command": command or _command(), "epochs": epochs_done, "steps": step,
                  "seconds": round(seconds, 1), "seconds_this_run": round(time.perf_counter() - t_start, 1),
                  "seed": seed, "val_fraction": val_fraction, "threads": torch.get_num_threads(),
                  "init": {"path": str(init), "sha256": init_sha} if init is not None else None,
                  "torch": str(torch.__version__)}
    save_checkpoint(ckpt_path, kind="timbre", model=model, config=asdict(cfg), features=features,
                    metrics=metrics, data=data, train=train_info)
    log.info("timbre: wrote %s", ckpt_path)
    return ckpt_path


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _val_retrieval(model: TimbreNet, train_bank: SongBank, val_bank: SongBank,
                   features: FeatureConfig) -> dict[str, float]:
    """Val songs as queries against every other song (train + val): singer top-1 and mAP of the TDNN part
    (the part training changes; the speaker branch is frozen)."""
    if len(val_bank) == 0:
        return {"val_singer_top1": float("nan"), "val_singer_map": float("nan"), "val_n_queries": 0}
    was_training = model.training
    enc = TimbreEncoder(model.eval(), features=features)
    emb = enc.tdnn_vectors([m.float() for m in val_bank.logmels + train_bank.logmels])  # the trained part
    labels = np.concatenate([val_bank.singers, train_bank.singers])
    m = retrieval_metrics(emb, labels, queries=np.arange(len(val_bank)))
    model.train(was_training)
    return {"val_singer_top1": m["top1"], "val_singer_map": m["map"], "val_n_queries": m["queries"]}


# ----------------------------------------------------------------------------------------------------------
# Gender
# ----------------------------------------------------------------------------------------------------------

def train_gender(cat: Catalogue, out_path: Path, *, timbre_checkpoint: Path | None = None, progress: bool = True,
                 command: str | None = None) -> Path:
    """Fit the gender classifier (:class:`encoders.voice.GenderClassifier`) on the speaker vectors of a catalogue
    with a ``gender`` column (e.g. a synthetic one) and write it as a ``gender`` checkpoint. Its metrics: training
    songs and singers, and leave-one-singer-out accuracy."""
    from encoders.checkpoint import load_encoder
    from encoders.speaker import speaker_vectors
    from encoders.voice import GenderClassifier, GenderConfig, gender_labels, leave_one_singer_out

    songs = cat.songs
    if "gender" not in songs:
        raise SingrecError("the catalogue has no 'gender' column to learn from", cat.source)
    labels = gender_labels(songs["gender"])
    known = labels != None  # noqa: E711 (element-wise)
    timbre = load_encoder(timbre_checkpoint or DEFAULT_CHECKPOINTS["timbre"], kind="timbre")
    if timbre.speaker is None:
        raise SingrecError("the gender classifier reads the speaker part of the timbre vector; this timbre encoder "
                           "has none", timbre_checkpoint or DEFAULT_CHECKPOINTS["timbre"])
    t0 = time.perf_counter()
    # the classifier reads only the speaker part of the timbre vector: the TDNN is not run; chunks bound memory
    rows, blocks, failures = np.flatnonzero(known), [], []
    ok = []
    for start in range(0, len(rows), 256):
        chunk = rows[start:start + 256]
        waves, failed = load_waves(songs["path"].to_numpy()[chunk].tolist(), sr=timbre.features.sample_rate,
                                   progress=progress)
        failures += failed
        ok += [i for i, w in zip(chunk, waves) if w is not None]
        blocks.append(speaker_vectors([w for w in waves if w is not None], timbre.speaker))
    ok = np.asarray(ok, dtype=int)
    speaker, y = np.concatenate(blocks), labels[ok] == "f"
    cfg = GenderConfig(speaker_key=timbre.speaker_key)
    clf = GenderClassifier.fit(speaker, y, cfg)
    singers = songs["singer"].to_numpy()[ok]
    metrics = {"songs": len(ok), "singers": int(len(set(singers))), "female_share": float(y.mean()),
               "train_song_accuracy": float(np.mean((clf.predict_proba(speaker) > 0.5) == y)),
               "loso_singer_accuracy": leave_one_singer_out(speaker, y, singers, cfg)}
    log.info("gender: %s", metrics)
    save_checkpoint(out_path, kind="gender", model=clf.module(), config=clf.config(), features=DEFAULT_FEATURES,
                    metrics=metrics, data=_data_summary(cat, list(songs["song_id"].to_numpy()[ok]), [], failures,
                                                        _manifest_sha(cat)),
                    train={"command": command or _command(), "seconds": round(time.perf_counter() - t0, 1)})
    return out_path


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def train(catalogue: str | Path | Catalogue, out_dir: str | Path, *,
          encoder: Literal["both", "timbre", "melody", "gender"] = "both",
          pitch: Policy | None = None, stretch: Policy | None = None,
          positives: Literal["song", "singer"] | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          seed: int = 0, val_fraction: float = 0.2, resume: bool = True, threads: int | None = None,
          progress: bool = True, command: str | None = None,
          timbre_config: TimbreConfig | None = None, cache_dir: str | Path | None = None,
          init: str | Path | None = "shipped") -> dict[str, Path]:
    """Train the timbre and/or melody encoder on a catalogue; returns ``{"timbre": path, "melody": path}``
    (the ones trained).

    Parameters
    ----------
    catalogue : a catalogue folder, a manifest (CSV/Parquet) or an opened :class:`~data.catalogue.Catalogue`
    out_dir : where ``timbre.pt`` / ``melody.pt`` (and their ``*.state.pt`` resume files) are written
    encoder : which encoder(s) to train
    pitch, stretch : timbre pair policy for pitch-shifted / time-stretched copies of the anchor crop:
        ``"pos"`` (extra positive), ``"neg"`` (extra hard negative) or ``"none"``; None keeps the
        ``timbre_config`` / :class:`~encoders.timbre.TimbreConfig` default (pitch ``"neg"``, stretch ``"pos"``)
    positives : timbre base positive, ``"song"`` (another crop of the same song, self-supervised) or
        ``"singer"`` (a crop of another song by the same singer); default: the TimbreConfig default
    epochs, batch_size, lr : override the encoders' defaults (None keeps them)
    seed : seeds the split, sampling and initialisation (torch, numpy, random)
    val_fraction : share of each singer's songs held out for validation (split by song)
    resume : continue from ``out_dir/*.state.pt`` when present (an error if its settings differ)
    threads : torch intra-op threads (default: :func:`encoders.base.set_torch_threads`)
    progress : tqdm progress bars
    command : the command line recorded in the checkpoint (default: ``sys.argv``)
    timbre_config : full timbre config (its fields are overridden by the explicit arguments above)
    cache_dir : where the timbre song bank (log-mels + rendered transform variants) is cached
        (default: ``out_dir``); runs on the same data and transforms can share it
    init : where the timbre encoder starts: ``"shipped"`` (fine-tune the shipped weights, with their settings
        as the defaults; how a user adapts it to a labelled catalogue of their own), a timbre checkpoint path,
        or ``"none"`` / None (random weights, ``TimbreConfig`` defaults: how the shipped weights were made)

    Raises
    ------
    SingrecError : unreadable catalogue, too few readable songs, or a resume state that does not match.
    """
    if encoder not in ("both", "timbre", "melody", "gender"):
        raise SingrecError(f"encoder must be 'both', 'timbre', 'melody' or 'gender', got {encoder!r}")
    set_torch_threads(threads)
    out_dir = Path(out_dir)
    command = command or _command()
    paths: dict[str, Path] = {}
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue.open(catalogue)
    if encoder == "gender":
        paths["gender"] = train_gender(cat, out_dir / "gender.pt", progress=progress, command=command)
    if encoder in ("both", "timbre"):
        overrides = {k: v for k, v in dict(pitch=pitch, stretch=stretch, positives=positives, epochs=epochs,
                                           batch_size=batch_size, lr=lr).items() if v is not None}
        init_path = None if init in (None, "none") else DEFAULT_CHECKPOINTS["timbre"] if init == "shipped" else Path(init)
        base = timbre_config
        if base is None:
            base = TimbreConfig.from_dict(read_checkpoint(init_path)["config"]) if init_path else TimbreConfig()
        try:
            cfg = replace(base, **overrides)
        except ValueError as exc:
            raise SingrecError(f"invalid timbre settings: {exc}") from exc
        paths["timbre"] = train_timbre(cat, out_dir, cfg, seed=seed, val_fraction=val_fraction,
                                       resume=resume, progress=progress, command=command, cache_dir=cache_dir,
                                       init=init_path)
    if encoder in ("both", "melody"):
        from encoders.melody import train_melody

        kwargs = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr).items() if v is not None}
        paths["melody"] = Path(train_melody(cat, out_dir / "melody.pt", seed=seed, val_fraction=val_fraction,
                                            resume=resume, progress=progress, command=command, **kwargs))
    return paths
