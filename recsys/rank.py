"""Similar-singer ranking over an index directory.

``Recommender.load(INDEX_DIR).similar_singers(query, k=10, timbre_weight=TIMBRE_WEIGHT, filters=None, diversity=0.0)``

How a query is answered:

1. The query becomes a set of weighted *query songs*, each a (timbre, melody) vector pair: a singer is all
   of its songs, a song is itself, an audio clip is embedded on the fly, and a mix of singers is the songs
   of each singer, each singer carrying its weight.
2. Candidate singers: every singer in a catalogue of up to ``EXACT_SINGERS``; above that the singers of the
   nearest songs (song-level FAISS search with the query centroid of each encoder) and the nearest singer
   vectors, of which the ``RESCORE_SINGERS`` best by a singer-level proxy of the score go on to step 3.
3. For every candidate singer, each of its songs gets the fused similarity
   ``timbre_weight * timbre + (1 - timbre_weight) * melody`` to every query song (exact, from the raw
   vectors), and the singer's scores (fused, timbre, melody) are the means over its ``TOP_SONGS`` best
   song matches by the fused similarity, per query song, weighted over query songs: song neighbours
   aggregate to singers. So ``score = timbre_weight * timbre + (1 - timbre_weight) * melody`` with
   ``timbre`` = ``timbre_score`` and ``melody`` = ``melody_score`` of the result row.
4. The query singer(s) are excluded; ``filters`` restrict singers by metadata (addressed by the names the
   catalogue gave its columns, see :meth:`Recommender.metadata_column`); ``diversity > 0`` re-ranks with
   maximal marginal relevance (MMR) on singer timbre vectors.

Each result row says why it was recommended: its best-matching (query song, catalogue song) pair.
"""
from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from data.errors import SingrecError
from encoders.base import l2_normalise
from index.faiss_index import load_index, search
from index.store import KINDS, check_encoders, current_snapshot, current_snapshot_id, read_snapshot_info

log = logging.getLogger(__name__)

TOP_SONGS = 3          # a singer's score is the mean of its best few song matches (robust to one odd take)
CANDIDATE_SONGS = 400  # song neighbours fetched per encoder before aggregation to singers
CANDIDATE_SINGERS = 100  # plus this many nearest singer vectors per encoder (exact; singers are few)
EXACT_SINGERS = 300    # up to this many singers every one is scored exactly (2000 singers x 30 songs: p99
                       # 106 ms exact vs 17 ms through candidates, same top-10; BENCHMARKS.md "Index and queries")
RESCORE_SINGERS = 200  # above that, at most this many candidates (best singer-vector proxy) are scored exactly
# A query is a handful of small matrix products: multi-threaded BLAS only adds hand-off cost, and on a
# busy 2-core machine it made them ~10x slower (30 ms vs 2.4 ms measured), so queries run BLAS and OpenMP
# (FAISS) on one thread.
_BLAS = ThreadpoolController()
# Default weight of the timbre score (the melody score gets the rest; the CLI, the app and the evaluation use it).
# 1: on real singing, every share of melody made the similar-singer lists worse (the melody vectors carry
# almost nothing of the voice; BENCHMARKS.md "Real singing"); melody is for asking who sings a similar tune.
TIMBRE_WEIGHT = 1.0
RESULT_COLUMNS = ["rank", "singer", "score", "timbre_score", "melody_score", "query_song", "match_song"]


def _name_key(name: str) -> str:
    """A singer name for matching: case-folded letters and digits only ("Ada Holm" == "ada-holm")."""
    return "".join(ch for ch in str(name).casefold() if ch.isalnum())


# ---------------------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Singer:
    name: str


@dataclass(frozen=True)
class Song:
    """A catalogue song; ``exclude_singer=False`` keeps its own singer in the results (as for a clip)."""
    song_id: str
    exclude_singer: bool = True


@dataclass(frozen=True)
class Audio:
    """An audio file path or a mono float32 waveform at 16 kHz."""
    source: Union[str, Path, np.ndarray]
    label: str = "clip"


@dataclass(frozen=True)
class Embedded:
    """A clip already embedded by :meth:`Recommender.embed_clip` ({kind: (d,)} vectors): queried like
    :class:`Audio` without running the encoders again (the app embeds an upload once, then re-ranks it)."""
    vectors: Mapping[str, np.ndarray]
    label: str = "clip"


@dataclass(frozen=True)
class Mix:
    """A weighted mix of singers, e.g. ``Mix({"ava-moreno": 0.5, "ben-ito": 0.5})``."""
    weights: Mapping[str, float]


Query = Union[str, Singer, Song, Audio, Embedded, Mix]


@dataclass
class _QuerySet:
    vectors: dict          # kind -> (Q, d) query song vectors
    weights: np.ndarray    # (Q,) summing to 1
    labels: list           # (Q,) query song ids (or the clip label)
    exclude: set           # singers not to recommend


# ---------------------------------------------------------------------------------------------- recommender
class Recommender:
    """Similar-singer search over one snapshot of an index directory (see index/store.py).

    ``index_dir`` is the index directory, ``snapshot_dir`` the snapshot all tables and vectors come from and
    ``snapshot`` its id.
    """

    def __init__(self, index_dir: Path, info: dict, songs: pd.DataFrame, singers: pd.DataFrame,
                 map_df: pd.DataFrame, song_vectors: dict, singer_vectors: dict, song_indexes: dict,
                 failures: pd.DataFrame, snapshot_dir: Path | None = None):
        self.index_dir, self.info = index_dir, info
        self.snapshot_dir = snapshot_dir if snapshot_dir is not None else index_dir
        self.snapshot = str(info.get("snapshot", ""))
        # name given in the catalogue -> stored column, for the metadata columns that reached singers.parquet
        self.metadata_names = {n: c for n, c in info.get("metadata", {}).items() if c in singers.columns}
        self.songs, self.singers, self.map, self.failures = songs, singers, map_df, failures
        self.song_vectors, self.singer_vectors, self.song_indexes = song_vectors, singer_vectors, song_indexes
        self._song_ids = songs["song_id"].to_numpy(dtype=object)
        self._song_row = {s: i for i, s in enumerate(self._song_ids)}
        self._singer_row = {s: i for i, s in enumerate(singers["singer"])}
        self._singer_of_song = pd.Categorical(songs["singer"], categories=singers["singer"]).codes.astype(np.int64)
        by_singer = np.argsort(self._singer_of_song, kind="stable")  # song rows grouped by singer
        bounds = np.cumsum(np.bincount(self._singer_of_song, minlength=len(singers)))[:-1]
        self._songs_of_singer = np.split(by_singer, bounds)
        self._encoders = None
        # candidate limits (module defaults; tests and benchmarks change them per recommender)
        self.exact_singers, self.rescore_singers = EXACT_SINGERS, RESCORE_SINGERS
        self._singer_names = singers["singer"].to_numpy(dtype=object)
        self._singer_meta = {c: singers[c].to_numpy() for c in self.metadata_columns}
        self._map_songs = map_df[map_df["kind"] == "song"].set_index("id").reindex(songs["song_id"])

    @classmethod
    def load(cls, index_dir: str | Path) -> "Recommender":
        """Open the published snapshot of an index directory (format version checked); vectors are
        memory-mapped.

        ``CURRENT`` is resolved once and every file is read from that snapshot, so a build publishing a new
        one meanwhile is never mixed in. Should that snapshot be removed while it is read (two newer builds
        published in the meantime), the load starts again from the new ``CURRENT``.
        """
        index_dir = Path(index_dir)
        for attempt in range(3):
            snap = current_snapshot(index_dir)
            try:
                return cls._load_snapshot(index_dir, snap)
            except SingrecError:
                if attempt == 2 or current_snapshot_id(index_dir) == snap.name:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load_snapshot(cls, index_dir: Path, snap: Path) -> "Recommender":
        info = read_snapshot_info(snap)
        try:
            songs = pd.read_parquet(snap / "songs.parquet")
            singers = pd.read_parquet(snap / "singers.parquet")
            map_df = pd.read_parquet(snap / "map.parquet")
            song_vectors = {k: np.load(snap / "embeddings" / f"songs_{k}.npy", mmap_mode="r") for k in KINDS}
            singer_vectors = {k: np.load(snap / "embeddings" / f"singers_{k}.npy") for k in KINDS}
            fpath = snap / "failures.csv"
            failures = pd.read_csv(fpath) if fpath.stat().st_size else pd.DataFrame()
        except (OSError, ValueError) as exc:
            raise SingrecError(f"index files are missing or unreadable ({exc})", snap) from exc
        for k in KINDS:
            if len(song_vectors[k]) != len(songs) or len(singer_vectors[k]) != len(singers):
                raise SingrecError(f"{k} vectors do not match the song/singer tables; rebuild the index", snap)
        song_indexes = {k: load_index(snap / f"{k}_songs.faiss") for k in KINDS}
        return cls(index_dir, info, songs, singers, map_df, song_vectors, singer_vectors, song_indexes, failures,
                   snapshot_dir=snap)

    # ------------------------------------------------------------------ properties
    @property
    def metadata_columns(self) -> list[str]:
        """Stored names of the singer metadata columns (a name colliding with a computed one is ``meta:<name>``)."""
        return [c for c in self.singers.columns if c not in ("singer", "n_songs")]

    @property
    def filter_columns(self) -> dict:
        """{name a filter takes: singer-table column}: the catalogue's columns by the names it gave them, then
        the computed singer columns (voice attributes) by their own names where no catalogue column has it."""
        out = dict(self.metadata_names)
        user = set(out.values())
        for col in self.metadata_columns:
            if col not in user:
                out.setdefault(col, col)
        return out

    def metadata_column(self, name: str) -> str:
        """The singer-table column a filter on ``name`` reads: see :attr:`filter_columns` (``rank`` ->
        ``meta:rank`` when the catalogue had a ``rank`` column); a stored column name is taken as it is."""
        name = str(name)
        columns = self.filter_columns
        if name in columns:
            return columns[name]
        if name in self.metadata_columns:
            return name
        raise SingrecError(f"cannot filter on {name!r}: singer metadata columns are {list(columns)}")

    def encoders(self) -> dict:
        """The index's encoders, loaded on first use (only audio queries need them) and checked by sha256."""
        if self._encoders is None:
            from encoders.checkpoint import CHECKPOINT_DIR, load_encoder
            encs = {}
            for kind in KINDS:
                rec = self.info["encoders"][kind]
                candidates = [Path(p) for p in (rec.get("checkpoint_path"),
                                                CHECKPOINT_DIR / (rec.get("checkpoint") or f"{kind}.pt")) if p]
                path = next((p for p in candidates if p.is_file()), None)
                if path is None:
                    raise SingrecError(f"the {kind} checkpoint this index was built with is not available "
                                       f"({rec.get('checkpoint')}); audio queries need it", self.index_dir)
                encs[kind] = load_encoder(path, kind=kind)
            check_encoders(self.info, encs, self.index_dir)
            self._encoders = encs
        return self._encoders

    # ------------------------------------------------------------------ resolving queries
    def resolve_singer(self, name: str) -> str:
        """The catalogue's name for ``name``: exact, else the one name equal to it ignoring case, spaces and
        punctuation ("Ada Holm" -> "ada-holm"); otherwise an error listing the closest names."""
        if name in self._singer_row:
            return name
        key = _name_key(name)
        same = [s for s in self._singer_row if _name_key(s) == key] if key else []
        if len(same) == 1:
            return same[0]
        close = same or difflib.get_close_matches(name, list(self._singer_row), n=5, cutoff=0.5)
        hint = f"; {'ambiguous' if same else 'closest'}: {', '.join(close)}" if close else ""
        raise SingrecError(f"unknown singer {name!r}{hint}")

    def embed_clip(self, source) -> dict:
        """Embed an audio file or waveform with the index's encoders: {kind: (d,)}."""
        from encoders.embed import embed_songs

        timbre, melody = embed_songs([source], self.encoders(), progress=False, workers=1)
        return {"timbre": timbre[0], "melody": melody[0]}

    def _query_set(self, query: Query) -> _QuerySet:
        if isinstance(query, str):
            if query in self._song_row and query not in self._singer_row:
                query = Song(query)
            else:
                query = Singer(query)
        if isinstance(query, Singer):
            query = Mix({query.name: 1.0})
        if isinstance(query, Mix):
            if not query.weights:
                raise SingrecError("a mix needs at least one singer")
            rows, weights, exclude = [], [], set()
            total = float(sum(query.weights.values()))
            if total <= 0 or any(w < 0 for w in query.weights.values()):
                raise SingrecError("mix weights must be non-negative and not all zero")
            for name, w in query.weights.items():
                name = self.resolve_singer(name)
                exclude.add(name)
                songs = self._songs_of_singer[self._singer_row[name]]
                rows += songs.tolist()
                weights += [w / total / len(songs)] * len(songs)
            rows = np.array(rows)
            return _QuerySet(self._song_rows(rows), np.array(weights), self._song_ids[rows].tolist(), exclude)
        if isinstance(query, Song):
            if query.song_id not in self._song_row:
                close = difflib.get_close_matches(query.song_id, list(self._song_row), n=5, cutoff=0.5)
                raise SingrecError(f"unknown song {query.song_id!r}" + (f"; closest: {', '.join(close)}" if close else ""))
            r = self._song_row[query.song_id]
            exclude = {self.songs["singer"].iloc[r]} if query.exclude_singer else set()
            return _QuerySet(self._song_rows(np.array([r])), np.ones(1), [query.song_id], exclude)
        if isinstance(query, Audio):
            query = Embedded(self.embed_clip(query.source), query.label)
        if isinstance(query, Embedded):
            return _QuerySet({k: np.asarray(query.vectors[k])[None] for k in KINDS}, np.ones(1), [query.label],
                             set())
        raise SingrecError(f"unsupported query type {type(query).__name__}")

    def song(self, song_id: str) -> pd.Series | None:
        """The ``songs.parquet`` row of a song id (path, singer, metadata), or None if it is not indexed."""
        row = self._song_row.get(song_id)
        return None if row is None else self.songs.iloc[row]

    def _song_rows(self, rows: np.ndarray) -> dict:
        """{kind: (Q, d)} vectors of catalogue song rows."""
        return {k: np.asarray(self.song_vectors[k][rows]) for k in KINDS}

    # ------------------------------------------------------------------ ranking
    def _allowed_singers(self, filters: Mapping | None) -> np.ndarray:
        mask = np.ones(len(self.singers), bool)
        for name, want in (filters or {}).items():
            col = self.metadata_column(name)
            values = [want] if isinstance(want, (str, int, float, bool)) else list(want)
            col_values = self.singers[col]
            mask &= col_values.isin(values).to_numpy() | col_values.astype(str).isin([str(v) for v in values]).to_numpy()
        return mask

    def similar_singers(self, query: Query, k: int = 10, timbre_weight: float = TIMBRE_WEIGHT,
                        filters: Mapping | None = None, diversity: float = 0.0) -> pd.DataFrame:
        """Rank singers similar to ``query``.

        Parameters
        ----------
        query : singer name, :class:`Singer`, :class:`Song`, :class:`Audio`, :class:`Embedded` or :class:`Mix`
        k : number of singers returned
        timbre_weight : weight of the timbre score in [0, 1]; the melody score gets the rest
        filters : ``{column: value or [values]}`` on singer metadata (e.g. ``{"gender": "f"}``), columns named as
            in the catalogue (see :meth:`metadata_column`)
        diversity : 0 = pure relevance; up to 1 = MMR re-ranking that spreads results over voice space

        Returns
        -------
        DataFrame with columns rank, singer, score, timbre_score, melody_score, query_song, match_song and
        the singer metadata columns, best first.
        """
        with _BLAS.limit(limits=1):  # BLAS and OpenMP (FAISS)
            return self._similar_singers(query, k, timbre_weight, filters, diversity)

    def _similar_singers(self, query, k, timbre_weight, filters, diversity) -> pd.DataFrame:
        if not 0.0 <= timbre_weight <= 1.0:
            raise SingrecError(f"timbre_weight must be in [0, 1], got {timbre_weight}")
        if not 0.0 <= diversity <= 1.0:
            raise SingrecError(f"diversity must be in [0, 1], got {diversity}")
        if k < 1:
            raise SingrecError(f"k must be at least 1, got {k}")
        q = self._query_set(query)
        allowed = self._allowed_singers(filters)
        for name in q.exclude:
            allowed[self._singer_row[name]] = False

        cand = self._candidates(q, allowed, k, timbre_weight)
        if len(cand) == 0:
            return pd.DataFrame(columns=RESULT_COLUMNS + self.metadata_columns)

        # exact fused similarity of every query song to every song of every candidate singer, at once:
        # the candidates' songs laid out as a (candidates, max songs) table, `valid` marking real entries
        lists = [self._songs_of_singer[j] for j in cand]
        lens = np.array([len(x) for x in lists])  # (C,)
        width = int(lens.max())
        flat = np.concatenate(lists)  # (R,) song rows
        valid = np.arange(width)[None, :] < lens[:, None]  # (C, M)
        pos = np.where(valid, np.r_[0, np.cumsum(lens)[:-1]][:, None] + np.arange(width)[None, :], 0)  # (C, M)
        t = (q.vectors["timbre"] @ np.asarray(self.song_vectors["timbre"][flat]).T)[:, pos]  # (Q, C, M)
        m = (q.vectors["melody"] @ np.asarray(self.song_vectors["melody"][flat]).T)[:, pos]  # (Q, C, M)
        fused = np.where(valid, timbre_weight * t + (1 - timbre_weight) * m, -np.inf)  # (Q, C, M)
        top = min(TOP_SONGS, width)
        best = np.argpartition(-fused, top - 1, axis=2)[:, :, :top]  # (Q, C, top) each singer's best songs
        picked_ok = np.take_along_axis(np.broadcast_to(valid, fused.shape), best, axis=2)  # (Q, C, top)
        n_top = np.minimum(lens, TOP_SONGS)  # (C,)

        def mean_top(a):  # (Q, C, M) -> (C,): mean over the best songs, weighted over query songs
            picked = np.where(picked_ok, np.take_along_axis(a, best, axis=2), 0.0)  # (Q, C, top)
            return q.weights @ (picked.sum(2) / n_top)

        score, t_score, m_score = mean_top(fused), mean_top(t), mean_top(m)  # (C,) each
        order = np.lexsort((cand, -score))  # best first, ties by singer row (deterministic)
        order = order[self._mmr(cand[order], score[order], k, diversity)] if diversity > 0 else order[:k]
        # only the k returned rows are assembled (a DataFrame over all candidates cost more than the scoring)
        joint = fused[:, order].transpose(1, 0, 2).reshape(len(order), -1).argmax(1)  # (k,) best pair
        pair_q, pair_m = np.divmod(joint, width)
        rows = cand[order]
        out = {"rank": np.arange(1, len(order) + 1), "singer": self._singer_names[rows],
               "score": score[order], "timbre_score": t_score[order], "melody_score": m_score[order],
               "query_song": [q.labels[i] for i in pair_q],
               "match_song": self._song_ids[flat[pos[order, pair_m]]]}
        out.update({c: v[rows] for c, v in self._singer_meta.items()})
        return pd.DataFrame(out)

    def _candidates(self, q: _QuerySet, allowed: np.ndarray, k: int, timbre_weight: float) -> np.ndarray:
        """Singer rows to score exactly (see module docstring, step 2)."""
        if len(self.singers) <= self.exact_singers:
            return np.flatnonzero(allowed)
        cand = set()
        n_songs = min(len(self.songs), max(CANDIDATE_SONGS, 40 * k))
        n_singers = min(len(self.singers), max(CANDIDATE_SINGERS, 10 * k))
        sims = {}
        for kind in KINDS:
            centroid = l2_normalise((q.weights[:, None] * q.vectors[kind]).sum(0, keepdims=True))
            _, ids = search(self.song_indexes[kind], centroid, n_songs)
            cand.update(self._singer_of_song[ids[0][ids[0] >= 0]].tolist())
            sims[kind] = np.asarray(self.singer_vectors[kind]) @ centroid[0]  # (S,)
            cand.update(np.argpartition(-sims[kind], n_singers - 1)[:n_singers].tolist())
        cand = np.array(sorted(cand), dtype=np.int64)
        cand = cand[allowed[cand]]
        if len(cand) < k:
            return np.flatnonzero(allowed)
        n_rescore = max(self.rescore_singers, 10 * k)
        if len(cand) > n_rescore:  # keep the best by fused singer-level similarity (a cheap proxy)
            proxy = timbre_weight * sims["timbre"][cand] + (1 - timbre_weight) * sims["melody"][cand]
            cand = np.sort(cand[np.argpartition(-proxy, n_rescore - 1)[:n_rescore]])
        return cand

    def _mmr(self, rows: np.ndarray, scores: np.ndarray, k: int, diversity: float) -> list[int]:
        """Maximal marginal relevance over candidates sorted best first (singer ``rows``, their ``scores``):
        relevance minus similarity to singers already picked. Returns the picked positions."""
        vecs = self.singer_vectors["timbre"][rows]
        sims = vecs @ vecs.T
        picked, left = [], list(range(len(rows)))
        while left and len(picked) < k:
            penalty = sims[np.ix_(left, picked)].max(1) if picked else np.zeros(len(left))
            best = left[int(np.argmax((1 - diversity) * scores[left] - diversity * penalty))]
            picked.append(best)
            left.remove(best)
        return picked

    # ------------------------------------------------------------------ map and clusters
    def place_on_map(self, vectors: Mapping, n_neighbors: int = 5) -> tuple[float, float]:
        """(x, y) for new vectors: similarity-weighted mean of the nearest songs' map positions."""
        qv = l2_normalise(np.asarray(vectors["timbre"], np.float32)[None])
        scores, ids = search(self.song_indexes["timbre"], qv, n_neighbors)
        ok = ids[0] >= 0
        w = np.maximum(scores[0][ok], 1e-6)
        xy = self._map_songs[["x", "y"]].to_numpy()[ids[0][ok]]
        return tuple(float(v) for v in (w[:, None] * xy).sum(0) / w.sum())

    def clusters(self) -> pd.DataFrame:
        """cluster, n_songs, n_singers, singers (comma-joined), from the precomputed map."""
        m = self.map
        songs = m[m["kind"] == "song"].groupby("cluster").size().rename("n_songs")
        singers = m[m["kind"] == "singer"].groupby("cluster")["id"].agg(list)
        out = pd.concat([songs, singers.map(len).rename("n_singers"), singers.map(", ".join).rename("singers")],
                        axis=1).fillna({"n_songs": 0, "n_singers": 0})
        return out.reset_index().rename(columns={"index": "cluster"}).astype({"n_songs": int, "n_singers": int})

    def describe(self) -> dict:
        return {"index_dir": str(self.index_dir), "snapshot": self.snapshot,
                **{k: self.info[k] for k in ("counts", "faiss", "dims")}}


def to_json(df: pd.DataFrame) -> str:
    """Results as JSON records (what ``singrec similar --json`` prints)."""
    return json.dumps(json.loads(df.to_json(orient="records")), indent=2)
