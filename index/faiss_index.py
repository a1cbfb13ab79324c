"""FAISS indexes in memory, saved and loaded atomically with a JSON sidecar (autofaiss style).

Vectors are L2-normalised, so inner product is cosine similarity. ``auto`` picks exact search (``Flat``)
up to :data:`EXACT_LIMIT` vectors, an inverted-file index of the full vectors above while it fits the memory
budget, and beyond that the compressed index autofaiss's selector picks for the budget (``OPQ..,IVF.._HNSW..,PQ..``).
:func:`build_song_index` builds one, raises ``nprobe`` until recall@10 against exact search on held-out songs
reaches :data:`TARGET_RECALL` (or stops gaining), and reports that recall (``index.json``); see benchmarks/query.py.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from data.errors import SingrecError

log = logging.getLogger(__name__)

EXACT_LIMIT = 100_000  # up to this many vectors exact search is fast enough (< 10 ms per query here)
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
TARGET_RECALL = 0.95  # recall@10 against exact search that build_song_index tunes nprobe for
# ... unless doubling nprobe gains less than this: a compressed (PQ) index's codes cap its recall below the target,
# and probing every list then only costs time (1M songs, OPQ256_512,IVF16384_HNSW32,PQ256x8: recall 0.598 with all
# 16384 lists probed; BENCHMARKS.md, scale)
PLATEAU_GAIN = 0.005
RECALL_QUERIES = 500  # held-out songs that measure it
ADD_SHARD = 100_000  # vectors added to an index at a time
# autofaiss 2.18 pins numpy<2 and pandas<3 but runs on this project's versions: installed without its pins
AUTOFAISS_INSTALL = "pip install --no-deps autofaiss==2.18.0 embedding-reader==1.8.1 fire==0.7.1 termcolor"


def memory_available() -> int:
    """Bytes of memory available now (``MemAvailable``; 8 GiB where /proc/meminfo is missing)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def parse_memory(value: str | int | None) -> int:
    """Bytes from ``None``/"auto" (half the memory available now), an int, or "500M", "4G", "1.5GB"..."""
    if value is None or value == "auto":
        return memory_available() // 2
    if isinstance(value, int):
        return value
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(text.rstrip("KMGT")) * units[text[-1] if text[-1:] in "KMGT" else ""])
    except (ValueError, KeyError):
        raise SingrecError(f"cannot read the memory size {value!r} (e.g. 500M, 4G, auto)") from None


def choose_index_key(n: int, dim: int | None = None, max_memory: int | None = None) -> str:
    """FAISS factory string for ``n`` vectors of ``dim`` within ``max_memory`` bytes: exact up to 100k, then IVF
    with ~4*sqrt(n) lists over the full vectors while they fit (or no budget is given), else the compressed
    index autofaiss's selector picks for the budget (product quantization: ~dim/6 bytes a vector)."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 1 << int(round(math.log2(4 * math.sqrt(n))))  # 1M -> 4096
    if dim is None or max_memory is None or n * (4 * dim + 8) + nlist * 4 * dim <= max_memory:
        return f"IVF{nlist},Flat"
    try:
        from autofaiss.external.optimize import get_optimal_quantization
    except ImportError:
        raise SingrecError(f"{n} vectors of {dim} dims need more than --index-memory ({max_memory >> 20} MiB) as "
                           f"IVF,Flat; choosing a compressed index needs autofaiss: {AUTOFAISS_INSTALL}") from None
    keys = get_optimal_quantization(n, dim, force_max_index_memory_usage=f"{max(1, max_memory >> 20)}M")
    if not keys:
        raise SingrecError(f"no FAISS index of {n} vectors of {dim} dims fits in {max_memory >> 20} MiB; "
                           "give the index more memory")
    return keys[0]


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
        sample = x if len(x) <= train_size else x[np.sort(rng.choice(len(x), train_size, replace=False))]
        index.train(sample)
    for start in range(0, len(x), ADD_SHARD):  # in shards: no second copy of the whole matrix inside FAISS
        index.add(x[start:start + ADD_SHARD])
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = default_nprobe(key)
    return index


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def build_song_index(embeddings: np.ndarray, index_key: str = "auto", *, max_memory: str | int | None = None,
                     seed: int = 0, queries: int = RECALL_QUERIES) -> tuple[faiss.Index, dict]:
    """A song index within a memory budget, its search tuned and its recall measured.

    The index (``index_key``, or :func:`choose_index_key` within ``max_memory``, default half the memory
    available) is trained on a sample and filled in shards by :func:`build_index`. For an approximate index,
    ``queries`` songs (a seeded sample) are searched against exact search: recall@10, raising ``nprobe`` (x2)
    from :func:`default_nprobe` until it reaches :data:`TARGET_RECALL` or every list is probed, or until a doubling
    gains less than :data:`PLATEAU_GAIN` (then the smaller ``nprobe`` is kept): a compressed index's recall
    stops short of the target, and the ranker rescores its candidates exactly from the stored vectors.

    Why not ``autofaiss.build_index``: autofaiss 2.18 builds every ``OPQ`` key -- the ones it picks under a
    memory budget -- with ``faiss.OPQMatrix(d, M=..., d2=...)``, which faiss-cpu 1.15 refuses (TypeError: no
    keyword ``M``), and it tunes the search for a query time, not a recall. Its index selection is used
    (:func:`choose_index_key`); FAISS's own factory builds the same keys.

    Returns
    -------
    index, info : ``{"factory", "nprobe" (IVF), "recall_at_10", "recall_queries"}`` (recall 1.0 for Flat: exact)
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    key = choose_index_key(len(x), x.shape[1], parse_memory(max_memory)) if index_key == "auto" else index_key
    index = build_index(x, key, seed=seed)
    info: dict = {"factory": key}
    if key == "Flat":
        return index, {**info, "recall_at_10": 1.0, "recall_queries": 0}
    rng = np.random.default_rng(seed + 1)
    q = x[np.sort(rng.choice(len(x), min(queries, len(x)), replace=False))]
    k = min(10, len(x))
    exact = _exact_top(x, q, k)
    ivf = _ivf(index)
    before = None  # (nprobe, recall) of the previous step
    while True:
        recall = recall_at_k(search(index, q, k)[1], exact, k)
        if before is not None and recall - before[1] < PLATEAU_GAIN:
            ivf.nprobe, recall = before
            log.warning("%s: recall@10 levels off at %.3f (target %.2f) from nprobe %d; the codes limit it",
                        key, recall, TARGET_RECALL, ivf.nprobe)
            break
        if ivf is None or recall >= TARGET_RECALL or ivf.nprobe >= ivf.nlist:
            break
        before = (ivf.nprobe, recall)
        ivf.nprobe = min(ivf.nlist, ivf.nprobe * 2)
    if ivf is not None:
        info["nprobe"] = int(ivf.nprobe)
    return index, {**info, "recall_at_10": round(float(recall), 4), "recall_queries": len(q)}


def _exact_top(x: np.ndarray, q: np.ndarray, k: int, block: int = 200_000) -> np.ndarray:
    """Ids of the exact top-k inner products of each query over ``x``, in blocks of rows."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(x), block):
        s = q @ x[start:start + block].T
        top = np.argpartition(-s, min(k, s.shape[1]) - 1, axis=1)[:, :k]
        best_s = np.hstack([best_s, np.take_along_axis(s, top, 1)])
        best_i = np.hstack([best_i, top + start])
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


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
            _ivf(index).nprobe = int(info["nprobe"])
    return index
