"""The 2-D catalogue map: UMAP of song and singer timbre vectors plus a cluster label (offline only).

UMAP and numba compile on first use (30-40 s cold), which is why the map is computed once when the index
is built and stored in ``map.parquet``; the app only reads it.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

log = logging.getLogger(__name__)

MIN_UMAP_POINTS = 16  # below this UMAP's graph is degenerate; PCA is used instead


def project_2d(vectors: np.ndarray, *, seed: int = 0, n_neighbors: int = 15) -> tuple[np.ndarray, str]:
    """2-D coordinates of (N, d) unit vectors; returns (coords (N, 2), method name)."""
    n = len(vectors)
    if n < MIN_UMAP_POINTS:
        coords = PCA(n_components=2, random_state=seed).fit_transform(vectors) if n > 2 else np.zeros((n, 2))
        return coords.astype(np.float32), "pca"
    import umap  # heavy import (numba); only the offline indexer pays for it

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, init="spectral" if n > 50 else "random", n_jobs=1)
    return reducer.fit_transform(vectors).astype(np.float32), "umap"


def cluster_singers(singer_vectors: np.ndarray, *, seed: int = 0, k_range=(3, 12)) -> KMeans | None:
    """K-means on singer vectors with k picked by silhouette score; None for fewer than 4 singers."""
    n = len(singer_vectors)
    if n < 4:
        return None
    best, best_score = None, -np.inf
    for k in range(k_range[0], min(k_range[1], n - 1) + 1):
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(singer_vectors)
        score = silhouette_score(singer_vectors, km.labels_, metric="cosine")
        if score > best_score:
            best, best_score = km, score
    log.info("clusters: k=%d (silhouette %.3f)", best.n_clusters, best_score)
    return best


def compute_map(songs: pd.DataFrame, song_vectors: np.ndarray, singers: pd.DataFrame,
                singer_vectors: np.ndarray, *, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Map rows for every song and singer: kind, id, singer, x, y, cluster (+ metadata columns).

    Songs and singers are embedded in one projection, so a singer sits among its songs.
    """
    coords, method = project_2d(np.vstack([song_vectors, singer_vectors]), seed=seed)
    km = cluster_singers(singer_vectors, seed=seed)
    singer_cluster = km.labels_ if km is not None else np.zeros(len(singers), dtype=int)
    return _map_table(songs, singers, coords, singer_cluster), {
        "method": method, "vectors": "timbre", "n_clusters": int(len(set(singer_cluster))), "seed": seed}


def reuse_map(previous: pd.DataFrame, songs: pd.DataFrame, singers: pd.DataFrame) -> pd.DataFrame | None:
    """The layout (x, y, cluster) of a previous :func:`compute_map` table with today's singer metadata, or None
    unless it has exactly these songs and singers, in this order. For a rebuild whose timbre vectors did not
    change (``singrec index --append`` with nothing new): UMAP would only recompute the same layout (seeded),
    at ~20 s of numba compilation in a fresh process."""
    rows = [("song", s) for s in songs["song_id"]] + [("singer", s) for s in singers["singer"]]
    if list(zip(previous["kind"], previous["id"])) != rows:
        return None
    singer_cluster = previous.loc[previous["kind"] == "singer", "cluster"].to_numpy()
    return _map_table(songs, singers, previous[["x", "y"]].to_numpy(), singer_cluster)


def _map_table(songs: pd.DataFrame, singers: pd.DataFrame, coords: np.ndarray,
               singer_cluster: np.ndarray) -> pd.DataFrame:
    """Map rows (songs first, then singers) from 2-D coordinates (songs + singers, 2) and singer clusters."""
    cluster_of = dict(zip(singers["singer"], singer_cluster))
    song_rows = pd.DataFrame({"kind": "song", "id": songs["song_id"].values, "singer": songs["singer"].values})
    singer_rows = pd.DataFrame({"kind": "singer", "id": singers["singer"].values,
                                "singer": singers["singer"].values})
    rows = pd.concat([song_rows, singer_rows], ignore_index=True)
    rows["x"], rows["y"] = coords[:, 0], coords[:, 1]
    rows["cluster"] = rows["singer"].map(cluster_of).astype(int)  # a song is in its singer's cluster
    meta = [c for c in singers.columns if c not in ("singer", "n_songs")]
    return rows.merge(singers[["singer", *meta]], on="singer", how="left")
