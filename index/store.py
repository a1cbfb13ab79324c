"""The index directory (shared/DESIGN.md, "Index directory"): snapshots, atomic writers and a checked reader.

```
INDEX_DIR/
  CURRENT               the id of the published snapshot (one line)
  snapshots/<id>/       one finished, immutable index:
    index.json            format version, snapshot id, created, encoders (name, sha256), feature config, dims,
                          counts, FAISS factory strings, metadata columns (name given -> stored column)
    songs.parquet         one row per indexed song; row order = FAISS id
    singers.parquet       one row per singer (+ metadata columns); row order = FAISS id
    timbre_songs.faiss  melody_songs.faiss  timbre_singers.faiss  melody_singers.faiss  (+ .json sidecars)
    embeddings/           raw float32 vectors (songs_<kind>.npy, singers_<kind>.npy)
    map.parquet           2-D UMAP coordinates and cluster label of every song and singer
    failures.csv          files that could not be indexed, with the reason
  build/                the chunks of a build that has not finished (resumed by the next run)
  writer.lock           held while a build runs (index/lock.py)
```
A build writes a new snapshot into ``snapshots/<id>.partial/``, renames it to ``snapshots/<id>/`` and then
publishes it by renaming a new ``CURRENT`` into place: one atomic step. A reader resolves ``CURRENT`` once
(:func:`current_snapshot`) and reads only from that folder, so it sees one whole index, never a mix; files
inside a snapshot are never changed, only new snapshots are added and old ones removed (the newest
``KEEP_SNAPSHOTS`` published ones are kept). Unchanged files are shared between snapshots by hard links.
"""
from __future__ import annotations

import filecmp
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import SingrecError

FORMAT_VERSION = 3  # snapshots/<id>/ published by CURRENT, as described above (2: the files at the top level)
KINDS = ("timbre", "melody")
RANGE_DIM = 3  # a song's sung range [low, centre, high] (MIDI), measured while its audio is decoded for the encoders
CHUNK_KINDS = (*KINDS, "range")  # the arrays of a build chunk (build/part-*.npz: vec_<kind>)
CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
PARTIAL = ".partial"     # suffix of a snapshot folder still being written
KEEP_SNAPSHOTS = 2       # published snapshots kept: the current one and the one before it
REBUILD_HINT = "rebuild it with `singrec index CATALOGUE --out INDEX_DIR` (without --append)"


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj) -> Path:
    return atomic_write(path, lambda t: Path(t).write_text(json.dumps(obj, indent=2, default=str)))


def write_parquet(path: str | Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda t: df.to_parquet(t, index=False))


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda t: df.to_csv(t, index=False))


def write_npy(path: str | Path, arr: np.ndarray) -> Path:
    def _w(t):
        with open(t, "wb") as f:
            np.save(f, np.ascontiguousarray(arr, dtype=np.float32))
    return atomic_write(path, _w)


def write_npz(path: str | Path, **arrays) -> Path:
    def _w(t):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        Path(t).write_bytes(buf.getvalue())
    return atomic_write(path, _w)


def fsync_dir(path: str | Path) -> None:
    """Make the entries of a folder (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_snapshot_id(index_dir: str | Path) -> str | None:
    """The published snapshot's id (the content of ``CURRENT``), or None; one small read, cheap to poll."""
    try:
        return (Path(index_dir) / CURRENT).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def current_snapshot(index_dir: str | Path) -> Path:
    """The folder of the published snapshot (``CURRENT`` read once); a clear error when there is none."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise SingrecError("index directory not found", index_dir)
    sid = current_snapshot_id(index_dir)
    if sid is None:
        if (index_dir / "index.json").is_file():  # the layout of format version 2 and before
            version = _format_version(index_dir / "index.json")
            raise SingrecError(f"index format version {version!r} is not supported (this singrec reads version "
                               f"{FORMAT_VERSION}); {REBUILD_HINT}", index_dir)
        hint = " (an unfinished build? run `singrec index` again to resume it)" if (
            index_dir / "build").is_dir() else ""
        raise SingrecError(f"not a singrec index: {CURRENT} is missing{hint}", index_dir)
    snap = index_dir / SNAPSHOTS / sid
    if not (snap / "index.json").is_file():
        raise SingrecError(f"the published snapshot {sid!r} is missing; {REBUILD_HINT}", index_dir)
    return snap


def _format_version(path: Path):
    try:
        return json.loads(path.read_text()).get("format_version")
    except (OSError, ValueError, AttributeError):
        return None


def read_snapshot_info(snapshot: str | Path) -> dict:
    """Read and check a snapshot's ``index.json`` (exists, parses, right format version)."""
    path = Path(snapshot) / "index.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise SingrecError("not a singrec index snapshot: index.json is missing", snapshot) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SingrecError(f"index.json is not valid JSON ({exc})", path) from exc
    version = info.get("format_version") if isinstance(info, dict) else None
    if version != FORMAT_VERSION:
        raise SingrecError(f"index format version {version!r} is not supported (this singrec reads version "
                           f"{FORMAT_VERSION}); {REBUILD_HINT}", path)
    return info


def read_info(index_dir: str | Path) -> dict:
    """``index.json`` of the published snapshot of ``index_dir``, checked (see :func:`read_snapshot_info`)."""
    return read_snapshot_info(current_snapshot(index_dir))


def publish_snapshot(index_dir: str | Path, sid: str) -> None:
    """Make ``snapshots/<sid>`` the published snapshot: a new ``CURRENT`` renamed into place (atomic)."""
    index_dir = Path(index_dir)
    atomic_write(index_dir / CURRENT, lambda t: Path(t).write_text(sid + "\n"))
    fsync_dir(index_dir)


def snapshot_ids(index_dir: str | Path) -> list[str]:
    """Ids of the finished snapshot folders (published or not), oldest first."""
    folder = Path(index_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL))


def next_snapshot_id(index_dir: str | Path) -> str:
    """A new id, after every existing one (ids are zero-padded counters: their order is their age)."""
    folder = Path(index_dir) / SNAPSHOTS
    used = [p.name.removesuffix(PARTIAL) for p in folder.iterdir()] if folder.is_dir() else []
    numbers = [int(n) for n in used if n.isdigit()]
    return f"{max(numbers, default=0) + 1:06d}"


def remove_unpublished(index_dir: str | Path) -> list[str]:
    """Delete snapshot folders no reader can be using: ``*.partial`` ones and finished ones newer than
    ``CURRENT`` (left by a build killed before it published). Call only while holding the writer lock."""
    index_dir = Path(index_dir)
    folder = index_dir / SNAPSHOTS
    if not folder.is_dir():
        return []
    current = current_snapshot_id(index_dir) or ""
    gone = [p for p in folder.iterdir() if p.name.endswith(PARTIAL) or (p.is_dir() and p.name > current)]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in gone]


def prune_snapshots(index_dir: str | Path, keep: int = KEEP_SNAPSHOTS) -> list[str]:
    """Delete published snapshots but the newest ``keep`` (the current one always stays); returns their ids.

    A reader that resolved ``CURRENT`` to a deleted snapshot has read its tables already; its memory-mapped
    vectors stay readable until it closes them (the files are unlinked, not overwritten).
    """
    index_dir = Path(index_dir)
    current = current_snapshot_id(index_dir)
    published = [s for s in snapshot_ids(index_dir) if current is not None and s <= current]
    old = published[:-max(keep, 1)]
    for sid in old:
        shutil.rmtree(index_dir / SNAPSHOTS / sid, ignore_errors=True)
    return old


LEGACY_FILES = ("index.json", "songs.parquet", "singers.parquet", "map.parquet", "failures.csv",
                *(f"{k}_{w}.faiss{j}" for k in KINDS for w in ("songs", "singers") for j in ("", ".json")))


def remove_legacy_layout(index_dir: str | Path) -> list[str]:
    """Delete the files an index of format version 2 kept at the top of ``INDEX_DIR`` (by their fixed names),
    once a snapshot has been published there; returns the names removed."""
    index_dir = Path(index_dir)
    if current_snapshot_id(index_dir) is None or not (index_dir / "index.json").is_file():
        return []
    gone = [n for n in LEGACY_FILES if (index_dir / n).is_file()]
    for name in gone:
        (index_dir / name).unlink()
    if (index_dir / "embeddings").is_dir():
        shutil.rmtree(index_dir / "embeddings", ignore_errors=True)
        gone.append("embeddings/")
    return gone


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Put ``src``'s content at ``dst`` as a hard link (no extra disk), or as a copy across file systems."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def share_unchanged(new: str | Path, old: str | Path) -> int:
    """Replace every file of folder ``new`` that is byte-identical with the same path in folder ``old`` by a
    hard link to it; returns the bytes shared. Both are snapshots (never changed in place), so sharing is safe.
    """
    new, old = Path(new), Path(old)
    shared = 0
    for f in sorted(new.rglob("*")):
        o = old / f.relative_to(new)
        if f.name == "index.json" or not f.is_file() or not o.is_file() or f.stat().st_size != o.stat().st_size:
            continue
        if os.path.samefile(f, o) or not filecmp.cmp(f, o, shallow=False):
            continue
        tmp = f.with_name(f".{f.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(o, tmp)
        except OSError:
            continue  # another file system: keep the copy
        os.replace(tmp, f)
        shared += f.stat().st_size
    return shared


def check_encoders(info: dict, encoders: dict, index_dir: str | Path) -> None:
    """Refuse to mix vectors: the encoders must be the ones the index was built with (by sha256)."""
    for kind, enc in encoders.items():
        want = info.get("encoders", {}).get(kind, {}).get("sha256")
        have = getattr(enc, "checkpoint_sha256", None) or getattr(enc, "name", None)
        if want is not None and want != have:
            raise SingrecError(
                f"the index was built with a different {kind} encoder (sha256 {str(want)[:12]}..., "
                f"given {str(have)[:12]}...); use the same checkpoints or rebuild the index", index_dir)


def encoder_info(enc) -> dict:
    """What index.json records about an encoder."""
    path = getattr(enc, "checkpoint_path", None)
    return {"name": getattr(enc, "name", type(enc).__name__), "dim": int(enc.dim),
            "checkpoint": Path(path).name if path else None,
            "checkpoint_path": str(path) if path else None,
            "sha256": getattr(enc, "checkpoint_sha256", None) or getattr(enc, "name", None)}
