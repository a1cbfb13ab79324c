"""FAISS indexes in memory, saved and loaded atomically with a JSON sidecar (autofaiss style).

Vectors are L2-normalised, so inner product is cosine similarity. ``auto`` picks exact search (``Flat``)
up to :data:`EXACT_LIMIT` vectors and an inverted-file index above, sized to the collection; recall of the
approximate index against exact search is measured by :func:`recall_at_k` (see benchmarks/query.py).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from data.errors import SingrecError

EXACT_LIMIT = 100_000  # up to this many vectors exact search is fast enough (< 10 ms per query here)
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def choose_index_key(n: int) -> str:
    """FAISS factory string for ``n`` vectors: exact up to 100k, then IVF with ~4*sqrt(n) lists."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 1 << int(round(math.log2(4 * math.sqrt(n))))  # 1M -> 4096
    return f"IVF{nlist},Flat"


def default_nprobe(index_key: str) -> int:
    """Lists probed per query for an IVF index: enough for recall@10 >= 0.95 on clustered data."""
    if not index_key.startswith("IVF"):
        return 1
    nlist = int(index_key[3:].split(",")[0])
    return max(16, nlist // 32)  # 1M songs, IVF4096: 128 lists (recall@10 0.946 at 64, benchmarks/query.py)


def build_index(embeddings: np.ndarray, index_key: str = "auto", metric: str = "ip", *,
                train_size: int = 100_000, seed: int = 0) -> faiss.Index:
    """Build a FAISS index over ``embeddings`` (N, d) float32; row i gets id i.

    Parameters
    ----------
    embeddings : (N, d) float32, L2-normalised rows for ``metric="ip"``
    index_key : a FAISS factory string ("Flat", "HNSW32", "IVF4096,Flat", ...) or "auto"
    metric : "ip" (inner product) or "l2"
    train_size : at most this many vectors train an index that needs training
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise SingrecError(f"need a non-empty (N, d) matrix to index, got shape {x.shape}")
    if metric not in METRICS:
        raise SingrecError(f"unknown metric {metric!r} (use one of {sorted(METRICS)})")
    key = choose_index_key(len(x)) if index_key == "auto" else index_key
    try:
        index = faiss.index_factory(x.shape[1], key, METRICS[metric])
    except RuntimeError as exc:
        raise SingrecError(f"invalid FAISS index key {key!r}: {exc}") from exc
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= train_size else x[rng.choice(len(x), train_size, replace=False)]
        index.train(sample)
    index.add(x)
    if key.startswith("IVF"):
        faiss.extract_index_ivf(index).nprobe = default_nprobe(key)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), ids (Q, k)); missing neighbours have id -1."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    return index.search(q, min(k, index.ntotal))


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    hits = [len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_index(index: faiss.Index, path: str | Path, *, info: dict | None = None) -> None:
    """Write ``path`` (the FAISS index) and ``path.json`` (what it is), each atomically."""
    path = Path(path)
    _atomic_write_bytes(path, faiss.serialize_index(index).tobytes())
    sidecar = {"ntotal": int(index.ntotal), "dim": int(index.d), "metric_type": int(index.metric_type),
               **(info or {})}
    _atomic_write_bytes(path.with_suffix(path.suffix + ".json"), json.dumps(sidecar, indent=2).encode())


def load_index(path: str | Path) -> faiss.Index:
    """Read a FAISS index written by :func:`save_index` (restoring nprobe); clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SingrecError("FAISS index file not found", path)
    try:
        index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as exc:
        raise SingrecError(f"cannot read FAISS index ({exc})", path) from exc
    sidecar = path.with_suffix(path.suffix + ".json")
    if sidecar.is_file():
        info = json.loads(sidecar.read_text())
        if "nprobe" in info:
            faiss.extract_index_ivf(index).nprobe = int(info["nprobe"])
    return index
