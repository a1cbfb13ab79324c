"""Offline catalogue indexing: audio files -> song/singer vectors -> FAISS indexes + map (DESIGN.md).

The build is resumable, incremental and never disturbs readers:

- the catalogue's metadata is checked before anything is embedded: a catalogue whose metadata cannot be
  stored fails at once. Metadata columns named like a computed column are kept as ``meta:<name>``
  (data/catalogue.py) and the build summary lists them.
- songs are embedded in fixed chunks; each finished chunk is written atomically to ``INDEX_DIR/build/``
  next to a plan (the song list and the encoders' sha256). Running the same command after a kill skips
  the finished chunks and ends with the same index as an uninterrupted run.
- ``append=True`` keeps the raw vectors of songs already in the published snapshot (its ``embeddings/``) and
  embeds only songs that are new (or failed before); songs gone from the catalogue are dropped. Rows are
  ordered by song id, so an appended index equals a full rebuild.
- a song that fails to load is written to ``failures.csv`` with its reason and the rest is indexed.
- the result is a new snapshot folder, published by one atomic rename of ``CURRENT`` (index/store.py); files
  equal to the previous snapshot's are hard links to them. A build killed at any point leaves the published
  snapshot as it was; the next run removes the unpublished folder and resumes from the chunks.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from data.catalogue import Catalogue
from data.errors import SingrecError
from encoders.base import l2_normalise, set_torch_threads
from encoders.embed import embed_songs
from encoders.voice import RangeMeter
from index.faiss_index import build_index, build_song_index, choose_index_key, parse_memory, save_index
from index.attributes import add_voice_attributes, check_fit_gender, load_gender_classifier
from index.lock import holds_index_lock
from index.map import compute_map, reuse_map
from index.store import (FORMAT_VERSION, KEEP_SNAPSHOTS, KINDS, PARTIAL, SNAPSHOTS, check_encoders,
                         current_snapshot, current_snapshot_id, encoder_info, fsync_dir, link_or_copy,
                         next_snapshot_id, prune_snapshots, publish_snapshot, read_snapshot_info,
                         remove_legacy_layout, remove_unpublished, share_unchanged, write_csv, write_json,
                         write_npy, write_npz, write_parquet)

log = logging.getLogger(__name__)

CHUNK_SIZE = 32  # songs per resumable unit of work
FAILURE_COLUMNS = ["song_id", "singer", "path", "reason"]
ENGINES = ("in-process", "ray")  # what embeds the songs (the rest of the build is shared)


@dataclass
class BuildReport:
    """What a build did; ``summary()`` is what the CLI prints."""

    index_dir: Path
    n_songs: int                 # songs in the finished index
    n_singers: int
    n_embedded: int              # songs embedded by this run (the rest were reused or resumed)
    n_reused: int                # songs whose vectors came from the previous index (append)
    n_resumed: int               # songs whose vectors came from chunks of an interrupted run
    failures: pd.DataFrame = field(repr=False)
    audio_seconds: float = 0.0   # audio embedded by this run
    seconds: float = 0.0         # wall time of this run
    attributes: dict = field(default_factory=dict)  # what index.json records of the voice attributes
    snapshot: str = ""           # id of the snapshot this run published
    renamed: dict = field(default_factory=dict)  # {metadata column name: stored name} of colliding names

    @property
    def snapshot_dir(self) -> Path:
        return self.index_dir / SNAPSHOTS / self.snapshot

    def summary(self) -> str:
        speed = f", {self.audio_seconds / self.seconds:.0f}x real time" if self.n_embedded and self.seconds else ""
        text = (f"indexed {self.n_songs} songs by {self.n_singers} singers into {self.index_dir} "
                f"(snapshot {self.snapshot}; {self.n_embedded} embedded, {self.n_reused} reused, "
                f"{self.n_resumed} resumed, {len(self.failures)} failed) in {self.seconds:.1f} s{speed}")
        g = self.attributes.get("gender", {})
        if "fitted_on" in g:
            text += (f"; gender predicted by a classifier fitted on the {g['labelled_singers']} singers labelled in "
                     f"'{g['fitted_on']}' (leave-one-singer-out accuracy {g['loso_singer_accuracy']:.3f})")
        if self.renamed:
            pairs = ", ".join(f"{n!r} as {c!r}" for n, c in self.renamed.items())
            text += (f"\nmetadata column(s) named like a computed field are kept under another name: {pairs} "
                     f"(filters and map colours still take the names given)")
        return text


def fault_point(name: str) -> None:
    """Called at the named points of a build ("chunk", "tables", "renamed", "published"); does nothing.

    The fault-injection tests replace it to kill the build process at that point (tests/test_snapshots.py).
    """


def check_metadata(cat: Catalogue) -> None:
    """Fail before any embedding if the catalogue's metadata cannot be stored in the index tables.

    Writes the song and singer tables the build would write (without vectors) to memory as Parquet.
    """
    try:
        songs = cat.songs.copy()
        songs.insert(songs.columns.get_loc("singer") + 1, "duration", np.float32(0.0))
        tables = {"songs.parquet": songs, "singers.parquet": cat.singer_table()}
        for name, table in tables.items():
            table.to_parquet(io.BytesIO(), index=False)
    except Exception as exc:  # pyarrow and pandas raise many types for values they cannot store
        raise SingrecError(f"the catalogue's metadata cannot be stored in the index ({type(exc).__name__}: "
                           f"{exc}); nothing was embedded", cat.source) from None


def embed_files(paths: list[str], encoders: dict) -> tuple[dict, np.ndarray, list[tuple[int, str]]]:
    """Embed audio files with every encoder and measure their sung range from the same decoded audio; files
    that fail are reported, not raised.

    Returns
    -------
    vectors : {kind: float32 (M, d)} for the M files that loaded, in input order: the encoders' unit vectors
        (``KINDS``) and ``"range"``, (M, 3) sung ranges (:class:`encoders.voice.RangeMeter`)
    durations : float32 (M,) seconds
    failures : [(position in ``paths``, reason)]
    """
    named = {**{k: encoders[k] for k in KINDS}, "range": RangeMeter(encoders["timbre"].features)}
    vectors, failed = embed_songs(paths, named, on_error="skip", progress=False)
    failures = [(f.index, f.reason) for f in failed]
    bad = {i for i, _ in failures}
    durations = np.array([sf.info(p).duration for i, p in enumerate(paths) if i not in bad], np.float32)
    return vectors, durations, failures


def embed_chunks(todo: pd.DataFrame, build_dir: Path, chunk_size: int, encoders: dict, *,
                 progress: bool = True) -> tuple[int, int, float]:
    """The in-process embedding engine: writes every ``build_dir/part-{c:05d}.npz`` of ``todo`` (songs
    ``c * chunk_size`` on) not written yet. Returns ``(songs embedded, songs resumed, seconds of audio embedded)``.
    ``index.ray_engine.embed_chunks_on_ray`` is the same contract on Ray Data."""
    n_chunks = (len(todo) + chunk_size - 1) // chunk_size
    n_embedded = n_resumed = 0
    audio_seconds = 0.0
    bar = tqdm(total=len(todo), desc="indexing", unit="song", disable=not progress)
    for c in range(n_chunks):
        part = build_dir / f"part-{c:05d}.npz"
        rows = todo.iloc[c * chunk_size:(c + 1) * chunk_size]
        if part.is_file():
            n_resumed += len(rows)
        else:
            vectors, durations, failures = embed_files(rows["path"].tolist(), encoders)
            failed = {i for i, _ in failures}
            write_npz(part, song_ids=np.array([s for i, s in enumerate(rows["song_id"]) if i not in failed]),
                      durations=durations, failed_ids=np.array([rows["song_id"].iloc[i] for i, _ in failures]),
                      failed_reasons=np.array([r for _, r in failures]),
                      **{f"vec_{k}": v for k, v in vectors.items()})
            n_embedded += len(rows) - len(failures)
            audio_seconds += float(durations.sum())
            fault_point("chunk")
        bar.update(len(rows))
    bar.close()
    return n_embedded, n_resumed, audio_seconds


def _plan_key(song_ids: list[str], encoders: dict, chunk_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: encoder_info(encoders[k])["sha256"] for k in KINDS}).encode())
    h.update(f"{chunk_size}\n".encode())
    h.update("\n".join(song_ids).encode())
    return h.hexdigest()


def _load_previous(snapshot: Path, encoders: dict) -> tuple[dict, pd.DataFrame, dict]:
    info = read_snapshot_info(snapshot)
    check_encoders(info, {k: encoders[k] for k in KINDS}, snapshot.parent.parent)
    songs = pd.read_parquet(snapshot / "songs.parquet")
    vectors = {k: np.load(snapshot / "embeddings" / f"songs_{k}.npy") for k in KINDS}
    return info, songs, vectors


@holds_index_lock("out_dir")  # one writer per directory: a second build fails at once (index/lock.py)
def build_catalogue_index(catalogue: str | Path | Catalogue, out_dir: str | Path, *, encoders: dict | None = None,
                          checkpoints: str | Path | None = None, index_key: str = "auto", append: bool = False,
                          chunk_size: int = CHUNK_SIZE, progress: bool = True, seed: int = 0,
                          fit_gender: str | None = None, keep: int = KEEP_SNAPSHOTS, engine: str = "in-process",
                          address: str = "local", actors: int | None = None,
                          index_memory: str | int | None = None) -> BuildReport:
    """Index a catalogue into ``out_dir`` (see module docstring).

    Parameters
    ----------
    catalogue : folder, manifest, or a :class:`Catalogue`
    out_dir : the index directory (created); the build adds a snapshot and publishes it (index/store.py)
    encoders : {"timbre": enc, "melody": enc}; default: loaded from ``checkpoints`` (default: shipped weights)
    index_key : FAISS factory string for the song indexes, or "auto" (exact up to 100k songs, then by size and
        ``index_memory``: bytes or "4G", default half the memory available; index/faiss_index.py)
    append : reuse the vectors of songs already in ``out_dir`` and embed only the new ones
    chunk_size : songs per resumable chunk
    fit_gender : a catalogue column with the gender of some singers: predicted gender comes from a classifier
        fitted on them (index/attributes.py) instead of the checkpoint folder's ``gender.pt``; named as in the catalogue
    keep : published snapshots kept (the newest ones; at least the current one)
    engine : "in-process" (:func:`embed_chunks`) or "ray" (index/ray_engine.py: Ray Data at ``address``, "local",
        "auto" or "ray://HOST:PORT", with ``actors`` embedding actors); the index is the same either way

    Raises
    ------
    SingrecError : bad catalogue, metadata or checkpoints, mismatched encoders or an index of another format on
        append, no song could be indexed, or another build holds ``out_dir``'s lock (index/lock.py; the
        message names it). All but the last two are raised before anything is embedded.
    """
    t0 = time.perf_counter()
    if engine not in ENGINES:
        raise SingrecError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})")
    if engine == "ray":
        from index.ray_engine import import_ray
        import_ray()  # without Ray: one line saying how to install it, before any work
    set_torch_threads()
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue.open(catalogue)
    check_metadata(cat)
    if fit_gender:  # the column as the catalogue names it (data/catalogue.py stored_name)
        fit_gender = cat.metadata.get(fit_gender, fit_gender)
        check_fit_gender(cat.songs, fit_gender)  # before any embedding
    if encoders is None:
        from encoders.checkpoint import load_default_encoders
        encoders = load_default_encoders(checkpoints)
    missing = [k for k in KINDS if k not in encoders]
    if missing:
        raise SingrecError(f"encoders for {missing} are required to build an index")
    out_dir = Path(out_dir)
    build_dir = out_dir / "build"
    gone = remove_unpublished(out_dir)  # a killed build's snapshot folders (never published, never read)
    if gone:
        log.info("removed unpublished snapshot folder(s) %s", ", ".join(gone))

    # ---- what is already done: the published snapshot (append) and an interrupted run's chunks
    prev_id = current_snapshot_id(out_dir)
    prev_snap = None if prev_id is None else out_dir / SNAPSHOTS / prev_id
    prev_info, prev_songs, prev_vectors = {}, pd.DataFrame(columns=["song_id"]), {k: None for k in KINDS}
    if append:
        if prev_snap is not None or (out_dir / "index.json").is_file():
            prev_snap = current_snapshot(out_dir)  # a clear error for an index of another format version
            prev_info, prev_songs, prev_vectors = _load_previous(prev_snap, encoders)
        else:
            log.info("no finished index in %s; --append builds it from scratch", out_dir)
    known = set(prev_songs["song_id"])
    todo = cat.songs[~cat.songs["song_id"].isin(known)].reset_index(drop=True)
    todo_ids = todo["song_id"].tolist()
    key = _plan_key(todo_ids, encoders, chunk_size)
    plan_path = build_dir / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()).get("key") == key:
        log.info("resuming the unfinished build in %s", build_dir)
    else:
        shutil.rmtree(build_dir, ignore_errors=True)
        write_json(plan_path, {"key": key, "songs": len(todo_ids), "chunk_size": chunk_size,
                               "catalogue": str(cat.source)})

    # ---- embed the songs still to do, chunk by chunk: afterwards every build/part-*.npz exists
    n_chunks = (len(todo_ids) + chunk_size - 1) // chunk_size
    if engine == "ray":
        from index.ray_engine import embed_chunks_on_ray
        n_embedded, n_resumed, audio_seconds = embed_chunks_on_ray(todo, build_dir, chunk_size, encoders, embed_files,
                                                                   progress=progress, address=address, actors=actors)
    else:
        n_embedded, n_resumed, audio_seconds = embed_chunks(todo, build_dir, chunk_size, encoders, progress=progress)

    # ---- gather: previous vectors of songs still in the catalogue + this build's chunks
    ids, durs, vecs, fails = [], [], {k: [] for k in KINDS}, []
    measured = {}  # song id -> sung range measured while embedding (chunks written by this version)
    keep_prev = prev_songs["song_id"].isin(set(cat.songs["song_id"])).to_numpy()
    if keep_prev.any():
        ids += prev_songs["song_id"][keep_prev].tolist()
        durs += prev_songs["duration"][keep_prev].tolist()
        for k in KINDS:
            vecs[k].append(prev_vectors[k][keep_prev])
    for c in range(n_chunks):
        with np.load(build_dir / f"part-{c:05d}.npz") as z:
            ids += z["song_ids"].tolist()
            durs += z["durations"].tolist()
            for k in KINDS:
                vecs[k].append(l2_normalise(z[f"vec_{k}"]) if len(z[f"vec_{k}"]) else z[f"vec_{k}"])
            fails += list(zip(z["failed_ids"].tolist(), z["failed_reasons"].tolist()))
            if "vec_range" in z.files:
                measured.update(zip(z["song_ids"].tolist(), z["vec_range"]))
    by_id = cat.songs.set_index("song_id")
    failures = pd.DataFrame([{"song_id": s, "singer": by_id.at[s, "singer"], "path": by_id.at[s, "path"],
                              "reason": r} for s, r in fails], columns=FAILURE_COLUMNS)
    if not ids:
        write_csv(build_dir / "failures.csv", failures)
        raise SingrecError(f"no song could be indexed ({len(failures)} failed; see {build_dir / 'failures.csv'})",
                           out_dir)

    order = np.argsort(np.array(ids, dtype=object), kind="stable")  # row order = song id order
    # reused rows are stored unit vectors, taken bit for bit (normalising them again could change the last bit,
    # and an unchanged index would no longer share its files with the previous snapshot)
    song_vecs = {k: np.concatenate([v for v in vecs[k] if len(v)]).astype(np.float32, copy=False)[order]
                 for k in KINDS}
    songs = by_id.loc[np.array(ids, dtype=object)[order]].reset_index()
    songs.insert(songs.columns.get_loc("singer") + 1, "duration", np.asarray(durs, np.float32)[order])

    # ---- singers: normalised mean of their songs
    singer_names = sorted(songs["singer"].unique())
    codes = pd.Categorical(songs["singer"], categories=singer_names).codes
    singer_vecs = {}
    for k in KINDS:
        sums = np.zeros((len(singer_names), song_vecs[k].shape[1]), np.float64)
        np.add.at(sums, codes, song_vecs[k])
        singer_vecs[k] = l2_normalise(sums)
    singer_meta = cat.singer_table().drop(columns="n_songs")
    singers = pd.DataFrame({"singer": singer_names, "n_songs": np.bincount(codes, minlength=len(singer_names))})
    singers = singers.merge(singer_meta, on="singer", how="left")
    songs, singers, attributes = add_voice_attributes(
        songs, singers, song_vecs["timbre"], classifier=load_gender_classifier(checkpoints, encoders["timbre"]),
        fit_gender=fit_gender, previous=prev_songs, measured=measured, progress=progress)

    # ---- the same songs as the previous index (--append with nothing new): its vectors are these, so its map
    # layout and FAISS files are what this build would compute again
    dim = max(int(v.shape[1]) for v in song_vecs.values())  # one key for both song indexes, within the budget
    song_key = choose_index_key(len(songs), dim, parse_memory(index_memory)) if index_key == "auto" else index_key
    unchanged = bool(prev_info) and prev_info["map"].get("seed") == seed and \
        prev_songs["song_id"].tolist() == songs["song_id"].tolist()
    map_df = reuse_map(pd.read_parquet(prev_snap / "map.parquet"), songs, singers) if unchanged else None
    if map_df is None:
        map_df, map_info = compute_map(songs, song_vecs["timbre"], singers, singer_vecs["timbre"], seed=seed)
    else:
        map_info = prev_info["map"]
        log.info("no song changed: the map layout is reused")
    reuse_faiss = unchanged and prev_info["faiss"]["songs"] == song_key

    # ---- write a new snapshot folder, then publish it (index/store.py)
    sid = next_snapshot_id(out_dir)
    stage = out_dir / SNAPSHOTS / f"{sid}{PARTIAL}"
    recall = prev_info["faiss"].get("recall_at_10", {}) if reuse_faiss else {}
    for k in KINDS:
        write_npy(stage / "embeddings" / f"songs_{k}.npy", song_vecs[k])
        write_npy(stage / "embeddings" / f"singers_{k}.npy", singer_vecs[k])
        if reuse_faiss:  # the same vectors: the previous snapshot's files, shared
            for name in (f"{k}_songs.faiss", f"{k}_singers.faiss"):
                for f in (name, name + ".json"):
                    if (prev_snap / f).is_file():
                        link_or_copy(prev_snap / f, stage / f)
            continue
        idx, built = build_song_index(song_vecs[k], song_key, seed=seed)  # recall@10 vs exact, nprobe tuned
        recall[k] = built["recall_at_10"]
        save_index(idx, stage / f"{k}_songs.faiss", info={"encoder": k, **built})
        save_index(build_index(singer_vecs[k], "Flat"), stage / f"{k}_singers.faiss",
                   info={"factory": "Flat", "encoder": k})
    write_parquet(stage / "songs.parquet", songs)
    fault_point("tables")
    write_parquet(stage / "singers.parquet", singers)
    write_parquet(stage / "map.parquet", map_df)
    write_csv(stage / "failures.csv", failures)
    features = encoders["timbre"].features
    write_json(stage / "index.json", {
        "format_version": FORMAT_VERSION,
        "snapshot": sid,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "catalogue": {"source": str(cat.source), "root": str(cat.root), "songs": len(cat),
                      "fingerprint": cat.fingerprint()},
        "encoders": {k: encoder_info(encoders[k]) for k in KINDS},
        "features": features.to_dict(),
        "dims": {k: int(song_vecs[k].shape[1]) for k in KINDS},
        "counts": {"songs": len(songs), "singers": len(singers), "failures": len(failures)},
        "faiss": {"songs": song_key, "singers": "Flat", "metric": "inner_product", "recall_at_10": recall},
        "map": map_info,
        "attributes": attributes,
        "metadata_columns": cat.metadata_columns,
        "metadata": cat.metadata,  # name given -> stored column (data/catalogue.py stored_name)
    })
    if prev_snap is not None and prev_snap.is_dir():
        share_unchanged(stage, prev_snap)
    fsync_dir(stage)
    stage.rename(out_dir / SNAPSHOTS / sid)
    fsync_dir(out_dir / SNAPSHOTS)
    fault_point("renamed")
    publish_snapshot(out_dir, sid)  # readers see the new snapshot from here on
    fault_point("published")
    shutil.rmtree(build_dir, ignore_errors=True)
    pruned = prune_snapshots(out_dir, keep)
    if pruned:
        log.info("removed old snapshot(s) %s", ", ".join(pruned))
    legacy = remove_legacy_layout(out_dir)  # an index of format version 2 rebuilt in place
    if legacy:
        log.info("removed the files of the format-2 layout: %s", ", ".join(legacy))
    report = BuildReport(out_dir, len(songs), len(singers), n_embedded, int(keep_prev.sum()), n_resumed,
                         failures, audio_seconds, time.perf_counter() - t0, attributes, snapshot=sid,
                         renamed=cat.renamed)
    log.info(report.summary())
    return report
