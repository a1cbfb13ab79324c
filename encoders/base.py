"""What every song embedder offers (learned encoders and baselines alike), torch thread policy, and the
checkpoint file format.

A checkpoint is one ``torch.save`` dict of plain types (loadable with ``weights_only=True``)::

    {"format": "singrec-encoder/1", "kind": "timbre" | "melody",
     "config": asdict(model config), "features": asdict(FeatureConfig),
     "state_dict": model weights, "metrics": {...}, "data": {training data summary},
     "train": {command, args, epochs done, seconds, ...}}

Training state (optimizer, rng, epoch) for resuming lives in a separate ``*.state.pt`` next to it, so the
shipped checkpoint stays small. The encoder modules write checkpoints with the functions here;
:func:`encoders.checkpoint.load_encoder` builds an encoder back from one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import torch
from scipy.spatial.distance import cdist

from data.errors import SingrecError
from data.features import FeatureConfig


@runtime_checkable
class Embedder(Protocol):
    """A song-level embedder: variable-length log-mel in, one L2-normalised vector per song out."""

    name: str                # "timbre", "melody", "mfcc", ...
    dim: int                 # embedding size
    features: FeatureConfig  # the log-mel the embedder expects

    def embed_logmels(self, mels: Sequence[torch.Tensor]) -> np.ndarray:
        """Embed songs given as log-mel tensors of shape (n_mels, T_i). Returns float32 (N, dim), unit rows."""
        ...


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of a (N, d) array, float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (checkpoints, shipped weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CHECKPOINT_FORMAT = "singrec-encoder/1"  # the "format" field of every checkpoint


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(x: Any) -> Any:
    """Metadata as plain Python types, so that ``torch.load(weights_only=True)`` accepts it
    (numpy scalars and arrays, Paths, ``torch.__version__`` and other str subclasses become plain types)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if x is None or type(x) in (bool, int, float, str) or isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return str(x)


def save_checkpoint(path: str | Path, *, kind: str, model: torch.nn.Module, config: dict,
                    features: FeatureConfig, metrics: dict | None = None, data: dict | None = None,
                    train: dict | None = None) -> Path:
    """Write a self-describing checkpoint atomically. ``config`` is ``asdict(model_config)``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "config": _plain(dict(config)),
        "features": features.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics or {})),
        "data": _plain(dict(data or {})),
        "train": _plain(dict(train or {})),
    }
    atomic_torch_save(payload, path)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint dict (``weights_only=True``); clear errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise SingrecError("checkpoint file not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise SingrecError(f"not a readable singrec checkpoint ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SingrecError(f"unsupported checkpoint format {found!r}, expected {CHECKPOINT_FORMAT!r}", path)
    for key in ("kind", "config", "features", "state_dict"):
        if key not in ckpt:
            raise SingrecError(f"checkpoint is missing {key!r}", path)
    return ckpt


def set_torch_threads(n: int | None = None) -> int:
    """Use ``n`` intra-op torch threads (default 1; ``SINGREC_THREADS`` overrides).

    The models are small and the indexer already decodes audio on other threads, so extra intra-op threads
    mostly wait on each other: on a busy 2-core machine one thread runs the melody encoder 15x faster than two
    (BENCHMARKS.md, "Melody encoder").
    """
    if n is None:
        n = int(os.environ.get("SINGREC_THREADS", "0")) or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def one_thread_per_process() -> None:
    """Worker-process initializer: one torch and one BLAS thread in this process (the processes share the cores)."""
    from threadpoolctl import threadpool_limits

    set_torch_threads(1)
    threadpool_limits(1)  # for the rest of the process (set once: ~2 ms per call)


def worker_processes(processes: int, *, initializer: Callable | None = one_thread_per_process, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of ``processes`` *spawned* worker processes, each set up by ``initializer``.

    Spawned, not forked (Linux's default): a forked child inherits the parent's OpenMP (libgomp) thread-pool
    state without its threads, and hangs in its first parallel torch op once the parent has run one on more
    than one thread (seen with ``SINGREC_THREADS=2``: ``embed_songs`` in one process, then with ``processes=2``;
    tests/test_embed.py). A spawned child starts a fresh interpreter (~2 s of imports), so chunks of work
    should be large.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                               initargs=initargs)


def supcon_loss(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised-contrastive loss (SupCon "L_out") with in-batch negatives; SimCLR's NT-Xent when every row has
    one positive. Both encoders train with it (timbre: :func:`encoders.timbre.nt_xent`; melody: TCAE's
    contrastive term).

    For every row ``a`` with at least one positive: mean over its positives ``p`` of
    ``-log(exp(s_ap / t) / sum_{b != a} exp(s_ab / t))`` with cosine similarities ``s``; averaged over such rows.
    Rows without a positive only appear in the denominators.

    Parameters
    ----------
    z : (N, D) unit rows
    positives : (N, N) bool, True where two rows are a positive pair (the diagonal is ignored)
    temperature : softmax temperature

    Returns
    -------
    scalar tensor; 0 (still part of the graph) when no row has a positive
    """
    eye = torch.eye(z.shape[0], dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))  # (N, N)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (N, N)
    pos = positives & ~eye  # (N, N)
    n_pos = pos.sum(dim=1)  # (N,)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0
    return (-(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / n_pos[has])).mean()


def retrieval_metrics(emb: np.ndarray, labels: Sequence, *, queries: Sequence[int] | None = None,
                      exclude_groups: Sequence | None = None) -> dict:
    """Mean average precision and top-1 of cosine retrieval, each query against every other row (the encoders'
    validation metrics; ``recsys.evaluate`` has the published benchmark metrics).

    Parameters
    ----------
    emb : (N, d) unit rows
    labels : (N,) relevant = same label
    queries : row indices used as queries (default: every row); the gallery is always every other row
    exclude_groups : optional (N,); candidates in the query's group are skipped (e.g. the singer, to
        score melody retrieval across singers only)

    Returns
    -------
    {"map": float, "top1": float, "queries": int} over queries with at least one relevant candidate
    """
    emb = np.asarray(emb, dtype=np.float32)
    labels = np.asarray(labels)
    queries = np.arange(len(labels)) if queries is None else np.asarray(queries)
    sims = emb[queries] @ emb.T  # (Q, N)
    valid = np.ones(sims.shape, dtype=bool)
    valid[np.arange(len(queries)), queries] = False  # never the query itself
    if exclude_groups is not None:
        g = np.asarray(exclude_groups)
        valid &= g[queries][:, None] != g[None, :]
    aps, top1 = [], []
    for qi, i in enumerate(queries):
        cand = np.nonzero(valid[qi])[0]
        rel = labels[cand] == labels[i]
        if not rel.any():
            continue
        order = np.argsort(-sims[qi, cand], kind="stable")
        hits = rel[order]
        precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
        aps.append(float(precision[hits].mean()))
        top1.append(float(hits[0]))
    if not aps:
        return {"map": float("nan"), "top1": float("nan"), "queries": 0}
    return {"map": float(np.mean(aps)), "top1": float(np.mean(top1)), "queries": len(aps)}


def ndcg_at_k(ranked: Sequence, relevance: dict, k: int = 10) -> float:
    """nDCG@k of ``ranked`` ids given graded ``relevance`` {id: gain}; 0 when nothing is relevant."""
    gains = np.array([relevance.get(x, 0.0) for x in list(ranked)[:k]], dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((gains * discounts[:len(gains)]).sum())
    ideal = np.sort(np.array(list(relevance.values()), dtype=np.float64))[::-1][:k]
    idcg = float((ideal * discounts[:len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def ground_truth_neighbours(singers: pd.DataFrame, k: int = 10) -> dict:
    """{singer: {neighbour: gain}} from standardised parameter distances (gain k for the nearest, 1 for the k-th).

    Parameters
    ----------
    singers : one row per singer, with a ``singer`` column and numeric ``p_*`` parameter columns
    """
    cols = [c for c in singers.columns if c.startswith("p_")]
    if not cols:
        raise SingrecError("ground truth has no p_* singer parameter columns")
    x = singers[cols].to_numpy(dtype=np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    dist = cdist(x, x)  # (S, S); not broadcasting (S, S, P), which is 14 GB for 9,600 singers
    np.fill_diagonal(dist, np.inf)
    names = singers["singer"].tolist()
    out = {}
    for i, name in enumerate(names):
        nearest = np.argsort(dist[i], kind="stable")[:k]
        out[name] = {names[j]: float(k - r) for r, j in enumerate(nearest)}
    return out


def ranking_ndcg(rank_fn: Callable[[str], Sequence[str]], truth: dict, k: int = 10) -> float:
    """Mean nDCG@k over every singer in ``truth`` of ``rank_fn(singer) -> ranked singer names``."""
    return float(np.mean([ndcg_at_k(rank_fn(s), rel, k) for s, rel in truth.items()]))


def distance_ranking_ndcg(names: Sequence[str], x: np.ndarray, truth: dict, k: int = 10) -> float:
    """nDCG@k of ranking each singer's neighbours by Euclidean distance between rows of ``x`` (S, D), one row per
    name (e.g. standardised singer parameters)."""
    names = list(names)
    d = cdist(x, x)  # (S, S)
    np.fill_diagonal(d, np.inf)
    row = {s: i for i, s in enumerate(names)}
    return ranking_ndcg(lambda s: [names[j] for j in np.argsort(d[row[s]], kind="stable")[:k]], truth, k)
