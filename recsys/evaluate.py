"""Retrieval metrics and the evaluation of an index against a synthetic catalogue's ground truth.

- ``singer_top1``: for every song, is its nearest *other* song (cosine) by the same singer?
- ``mean_average_precision``: every item queries all others; relevant = same label.
- ``ndcg_at_k``: graded nDCG of a ranked list against ground-truth neighbours.
- ``ground_truth_neighbours``: "truly similar singers" = nearest singers by distance between standardised
  singer parameter vectors (the ``p_*`` columns of ``ground_truth/singers.csv``).
- ``evaluate_index``: all of the above for an index directory (what ``singrec evaluate`` prints).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from encoders.base import ground_truth_neighbours, ndcg_at_k, ranking_ndcg  # noqa: F401  (also for callers of this module)


def _cosine(emb: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def singer_top1(emb: np.ndarray, labels: Sequence) -> float:
    """Fraction of items whose nearest other item (cosine) has the same label.

    Parameters
    ----------
    emb : (N, d) vectors
    labels : (N,) labels (singer of each song)
    """
    labels = np.asarray(labels)
    sim = _cosine(emb)
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[np.argmax(sim, axis=1)] == labels))


def mean_average_precision(emb: np.ndarray, labels: Sequence, *, exclude: Sequence | None = None) -> float:
    """Mean over queries of average precision; relevant = same label, the query itself excluded.

    Parameters
    ----------
    emb : (N, d) vectors
    labels : (N,) relevance labels (singer, or melody id)
    exclude : optional (N,) group labels; items of the query's own group are removed from its ranking
        (e.g. ``exclude=singers`` with ``labels=melody_ids``: the same melody *by other singers*)

    Queries without any relevant item are skipped.
    """
    labels = np.asarray(labels)
    sim = _cosine(emb)
    n = len(labels)
    drop = np.eye(n, dtype=bool)
    if exclude is not None:
        groups = np.asarray(exclude)
        drop |= groups[:, None] == groups[None, :]
    sim[drop] = -np.inf
    order = np.argsort(-sim, axis=1, kind="stable")  # (N, N)
    rel = (labels[order] == labels[:, None]) & ~np.take_along_axis(drop, order, axis=1)  # (N, N)
    n_rel = rel.sum(1)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, n + 1)[None, :]
    ap = (precision * rel).sum(1) / np.maximum(n_rel, 1)
    ok = n_rel > 0
    return float(ap[ok].mean()) if ok.any() else float("nan")


def vector_ranking_ndcg(singer_names: Sequence[str], singer_vectors: np.ndarray, truth: dict, k: int = 10) -> float:
    """nDCG@k of plain cosine ranking of singer vectors (a baseline ranker for any embedding)."""
    names = list(singer_names)
    sim = _cosine(singer_vectors)
    np.fill_diagonal(sim, -np.inf)
    row = {s: i for i, s in enumerate(names)}
    return ranking_ndcg(lambda s: [names[j] for j in np.argsort(-sim[row[s]], kind="stable")[:k]], truth, k)


def load_ground_truth(index_info: dict) -> pd.DataFrame | None:
    """The catalogue's ``ground_truth/singers.csv`` next to its manifest, if it has one."""
    from data.synth import singer_truth_path

    path = singer_truth_path(index_info.get("catalogue", {}).get("source", ""))
    return pd.read_csv(path) if path.is_file() else None


def evaluate_index(index_dir: str | Path, *, k: int = 10, timbre_weight: float | None = None) -> dict:
    """Retrieval metrics of an index, and nDCG@k of its similar-singer ranking when ground truth exists
    (``timbre_weight`` None: the ranking's default, ``recsys.rank.TIMBRE_WEIGHT``)."""
    from recsys.rank import TIMBRE_WEIGHT, Recommender, Song

    timbre_weight = TIMBRE_WEIGHT if timbre_weight is None else timbre_weight

    rec = Recommender.load(index_dir)
    songs = rec.songs
    t = np.asarray(rec.song_vectors["timbre"])
    m = np.asarray(rec.song_vectors["melody"])
    out = {"songs": len(songs), "singers": len(rec.singers),
           "timbre_singer_top1": singer_top1(t, songs["singer"]),
           "timbre_singer_map": mean_average_precision(t, songs["singer"]),
           "melody_singer_top1": singer_top1(m, songs["singer"])}
    if "melody_id" in songs:
        out["melody_map_across_singers"] = mean_average_precision(m, songs["melody_id"], exclude=songs["singer"])
        out["timbre_melody_map_across_singers"] = mean_average_precision(t, songs["melody_id"],
                                                                         exclude=songs["singer"])
    # a catalogue song queried like an uploaded clip (its singer not excluded): is its own singer first?
    owner = songs.set_index("song_id")["singer"]
    out["clip_self_top1"] = float(np.mean([
        rec.similar_singers(Song(s, exclude_singer=False), k=1, timbre_weight=timbre_weight)["singer"].iloc[0]
        == owner[s] for s in songs["song_id"]]))
    gt = load_ground_truth(rec.info)
    if gt is not None:
        gt = gt[gt["singer"].isin(set(rec.singers["singer"]))]
        truth = ground_truth_neighbours(gt, k)
        def ndcg(tw):
            return ranking_ndcg(lambda s: rec.similar_singers(s, k=k, timbre_weight=tw)["singer"].tolist(), truth, k)

        out[f"ndcg@{k}"] = ndcg(timbre_weight)
        out[f"ndcg@{k}_timbre_only"] = ndcg(1.0)
        out[f"ndcg@{k}_random"] = float(np.mean([
            ndcg_at_k(np.random.default_rng(i).permutation([x for x in truth if x != s])[:k], rel, k)
            for i, (s, rel) in enumerate(truth.items())]))
    return out
