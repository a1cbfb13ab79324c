"""The index directory (shared/DESIGN.md, "Index directory"): atomic writers and a checked reader.

```
INDEX_DIR/
  index.json            format version, created, encoders (name, sha256), feature config, dims, counts,
                        FAISS factory strings
  songs.parquet         one row per indexed song; row order = FAISS id
  singers.parquet       one row per singer (+ metadata columns); row order = FAISS id
  timbre_songs.faiss  melody_songs.faiss  timbre_singers.faiss  melody_singers.faiss  (+ .json sidecars)
  embeddings/           raw float32 vectors (songs_<kind>.npy, singers_<kind>.npy)
  map.parquet           2-D UMAP coordinates and cluster label of every song and singer
  failures.csv          files that could not be indexed, with the reason
```
``index.json`` is written last: a directory without it is an unfinished build, never a usable index.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import SingrecError

FORMAT_VERSION = 2  # index.json, tables and embeddings/ as described above
KINDS = ("timbre", "melody")


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


def read_info(index_dir: str | Path) -> dict:
    """Read and check ``index.json`` (exists, parses, right format version)."""
    index_dir = Path(index_dir)
    path = index_dir / "index.json"
    if not index_dir.is_dir():
        raise SingrecError("index directory not found", index_dir)
    if not path.is_file():
        hint = " (an unfinished build? run `singrec index` again to resume it)" if (
            index_dir / "build").is_dir() else ""
        raise SingrecError(f"not a singrec index: index.json is missing{hint}", index_dir)
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SingrecError(f"index.json is not valid JSON ({exc})", path) from exc
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise SingrecError(f"index format version {version!r} is not supported (this singrec reads version "
                           f"{FORMAT_VERSION}); rebuild it with `singrec index`", path)
    return info


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
