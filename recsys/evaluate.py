"""Retrieval metrics and the evaluation of an index of any catalogue with singer labels.

- ``singer_top1``: for every song, is its nearest other song (cosine) by the same singer?
- ``mean_average_precision``: every item queries all others; relevant = same label.
- ``agreement_at_k``: the share of each singer's k similar singers that share its value of a metadata column.
- ``ndcg_at_k``: graded nDCG of a ranked list against ground-truth neighbours.
- ``ground_truth_neighbours``: "truly similar singers" = nearest singers by distance between standardised
  singer parameter vectors (the ``p_*`` columns of a synthetic catalogue's ``ground_truth/singers.csv``).
- ``evaluate_index``: the metrics of an index directory (what ``singrec evaluate`` prints).

Own recording excluded: when the catalogue has a ``song`` column, rows with the same value are clips of one
recording (they share take, room and tune), and a query never counts them as candidates; without one, every
file is its own recording.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data.errors import SingrecError
from encoders.base import (ground_truth_neighbours, l2_normalise, ndcg_at_k,  # noqa: F401  (also for callers)
                           ranking_ndcg)


def _cosine(emb: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def _excluded(n: int, exclude: Sequence | None) -> np.ndarray:
    """(N, N) bool: the pairs a query does not rank (itself, and items of its own ``exclude`` group)."""
    drop = np.eye(n, dtype=bool)
    if exclude is not None:
        groups = np.asarray(exclude)
        drop |= groups[:, None] == groups[None, :]
    return drop


def singer_top1(emb: np.ndarray, labels: Sequence, *, exclude: Sequence | None = None) -> float:
    """Fraction of items whose nearest other item (cosine) has the same label.

    Parameters
    ----------
    emb : (N, d) vectors
    labels : (N,) labels (singer of each song)
    exclude : optional (N,) group labels; items of the query's own group are not candidates (e.g. the
        clips of the query's own recording). Queries without a candidate of their label are skipped.
    """
    labels = np.asarray(labels)
    sim = _cosine(emb)
    drop = _excluded(len(labels), exclude)
    sim[drop] = -np.inf
    has = ((labels[:, None] == labels[None, :]) & ~drop).any(1)
    if not has.any():
        return float("nan")
    return float(np.mean(labels[np.argmax(sim, axis=1)][has] == labels[has]))


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
    drop = _excluded(n, exclude)
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


def agreement_at_k(rank_fn: Callable[[str], Sequence[str]], values: pd.Series, k: int) -> float:
    """Mean over singers with a value of the share of ``rank_fn(singer)[:k]`` that have the same value.

    Parameters
    ----------
    rank_fn : singer -> ranked other singers
    values : the metadata value of each singer (index = singer); missing values are skipped as queries and
        never agree as results
    """
    known = values.dropna()
    shares = [np.mean([values.get(o) == v for o in list(rank_fn(s))[:k]]) for s, v in known.items()]
    return float(np.mean(shares)) if shares else float("nan")


def centroid_ranker(singers: Sequence, song_vectors: np.ndarray) -> Callable[[str], list[str]]:
    """Rank singers by cosine between singer centroids (mean of their unit song vectors): the baselines'
    similar-singer list."""
    frame = pd.DataFrame(l2_normalise(song_vectors)).groupby(np.asarray(singers)).mean()
    names, sim = frame.index.tolist(), _cosine(frame.to_numpy())
    np.fill_diagonal(sim, -np.inf)
    row = {s: i for i, s in enumerate(names)}
    return lambda s: [names[j] for j in np.argsort(-sim[row[s]], kind="stable") if j != row[s]]


def mfcc_song_vectors(paths: Sequence[str | Path]) -> np.ndarray:
    """The MFCC-20 mean + std baseline of songs (standardised over these songs), (N, 40) unit rows."""
    from data.audio import load_audio
    from encoders.baselines import MFCCEmbedder

    mfcc = MFCCEmbedder()
    raw = mfcc.raw_waveforms([load_audio(p) for p in tqdm(paths, desc="MFCC baseline", unit="song")])
    return mfcc.fit(raw).transform(raw)


def singer_values(rec, column: str) -> pd.Series:
    """A metadata column per singer (named as in the catalogue, or by its stored ``meta:`` name): the singers
    table's, else the most common value over its songs."""
    column = rec.info.get("metadata", {}).get(column, column)
    if column in rec.singers:
        return rec.singers.set_index("singer")[column]
    if column not in rec.songs:
        raise SingrecError(f"the index has no metadata column {column!r} (columns: "
                           f"{', '.join(map(str, rec.songs.columns))})", rec.index_dir)
    return rec.songs.groupby("singer")[column].agg(lambda v: v.mode().iloc[0] if v.notna().any() else None)


def load_ground_truth(index_info: dict) -> pd.DataFrame | None:
    """The catalogue's ``ground_truth/singers.csv`` next to its manifest, if it has one."""
    from data.synth import singer_truth_path

    path = singer_truth_path(index_info.get("catalogue", {}).get("source", ""))
    return pd.read_csv(path) if path.is_file() else None


def evaluate_index(index_dir: str | Path, *, k: int = 10, timbre_weight: float | None = None,
                   agree: Sequence[str] = (), baseline: bool = False) -> dict:
    """Metrics of an index of any catalogue with singer labels.

    Parameters
    ----------
    index_dir : made by ``singrec index``
    k : cut-off of nDCG and of the similar-singer lists scored by ``agree``
    timbre_weight : the ranking's (None: ``recsys.rank.TIMBRE_WEIGHT``)
    agree : metadata columns (e.g. ``gender``): ``agree@k_<col>`` is the share of each singer's k similar
        singers with its value, for the ranking, for timbre only, and (with ``baseline``) for MFCC centroids
    baseline : also score the MFCC-20 mean + std baseline (reads the songs' audio again)

    Returns
    -------
    dict: counts; ``timbre_singer_top1`` / ``_map`` (and ``mfcc_...``) with the query's own recording excluded
    (the ``song`` column, if any); melody figures; ``agree@k_*``; and, for a synthetic catalogue with ground
    truth, melody mAP across singers and nDCG@k.
    """
    from recsys.rank import TIMBRE_WEIGHT, Recommender, Song

    rec = Recommender.load(index_dir)
    tw = TIMBRE_WEIGHT if timbre_weight is None else timbre_weight
    songs = rec.songs
    singer = songs["singer"].to_numpy()
    recording = songs["song"].astype(str).to_numpy() if "song" in songs else songs["song_id"].to_numpy()
    t = np.asarray(rec.song_vectors["timbre"])
    m = np.asarray(rec.song_vectors["melody"])
    out = {"songs": len(songs), "singers": len(rec.singers), "recordings": len(set(recording)),
           "timbre_singer_top1": singer_top1(t, singer, exclude=recording),
           "timbre_singer_map": mean_average_precision(t, singer, exclude=recording),
           "melody_singer_top1": singer_top1(m, singer, exclude=recording)}
    mfcc = mfcc_song_vectors(songs["path"].tolist()) if baseline else None
    if mfcc is not None:
        out["mfcc_singer_top1"] = singer_top1(mfcc, singer, exclude=recording)
        out["mfcc_singer_map"] = mean_average_precision(mfcc, singer, exclude=recording)
    if "melody_id" in songs:
        out["melody_map_across_singers"] = mean_average_precision(m, songs["melody_id"], exclude=singer)
        out["timbre_melody_map_across_singers"] = mean_average_precision(t, songs["melody_id"], exclude=singer)
    # a catalogue song queried like an uploaded clip (its singer not excluded): is its own singer first?
    owner = songs.set_index("song_id")["singer"]
    out["clip_self_top1"] = float(np.mean([
        rec.similar_singers(Song(s, exclude_singer=False), k=1, timbre_weight=tw)["singer"].iloc[0]
        == owner[s] for s in songs["song_id"]]))

    def ranker(weight: float) -> Callable[[str], list[str]]:
        return lambda s: rec.similar_singers(s, k=k, timbre_weight=weight)["singer"].tolist()

    for column in agree:
        values = singer_values(rec, column)
        out[f"agree@{k}_{column}"] = agreement_at_k(ranker(tw), values, k)
        out[f"agree@{k}_{column}_timbre_only"] = agreement_at_k(ranker(1.0), values, k)
        if mfcc is not None:
            out[f"agree@{k}_{column}_mfcc"] = agreement_at_k(centroid_ranker(singer, mfcc), values, k)
    gt = load_ground_truth(rec.info)
    if gt is not None:
        gt = gt[gt["singer"].isin(set(rec.singers["singer"]))]
        truth = ground_truth_neighbours(gt, k)
        out[f"ndcg@{k}"] = ranking_ndcg(ranker(tw), truth, k)
        out[f"ndcg@{k}_timbre_only"] = ranking_ndcg(ranker(1.0), truth, k)
        out[f"ndcg@{k}_random"] = float(np.mean([
            ndcg_at_k(np.random.default_rng(i).permutation([x for x in truth if x != s])[:k], rel, k)
            for i, (s, rel) in enumerate(truth.items())]))
    return out
