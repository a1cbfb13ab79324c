"""Similar-singer ranking over an index directory.

``Recommender.load(INDEX_DIR).similar_singers(query, k=10, timbre_weight=0.7, filters=None, diversity=0.0)``

How a query is answered:

1. The query becomes a set of weighted *query songs*, each a (timbre, melody) vector pair: a singer is all
   of its songs, a song is itself, an audio clip is embedded on the fly, and a mix of singers is the songs
   of each singer, each singer carrying its weight.
2. Candidate singers: every singer in a catalogue of up to ``EXACT_SINGERS``; above that the singers of the
   nearest songs (song-level FAISS search with the query centroid of each encoder) and the nearest singer
   vectors, of which the ``RESCORE_SINGERS`` best by a singer-level proxy of the score go on to step 3.
3. For every candidate singer, each of its songs gets the fused similarity
   ``timbre_weight * timbre + (1 - timbre_weight) * melody`` to every query song (exact, from the raw
   vectors), and the singer's scores are the means over its ``TOP_SONGS`` best song matches, per query
   song, weighted over query songs: song neighbours aggregate to singers.
   The voice part also compares the singers' *voice profiles*: D = 19 estimated voice parameters (range,
   vocal tract, source, vibrato, onset habits; encoders/profile.py), or, in an index built without a
   profile head, the D = 12 expression descriptors (encoders/expression.py):
   ``profile = 1 - |z_a - z_b|^2 / (2 D)`` (1 = the same, ~0 = as far apart as two random ones), z centred
   and scaled over the catalogue: descriptors each by its own spread, a head's estimates all by their common
   (root-mean-square) spread, which keeps the head's shrinkage of a poorly estimated parameter. Like is
   compared with like: for a singer or a mix, the query's singer profile against each candidate singer's
   (scaled over the catalogue's singers); for a song or a clip, which has only its own, against each of
   the candidate's songs (scaled over the catalogue's songs) and averaged over the same best song
   matches as timbre and melody -- so a catalogue song used as a clip still finds its own singer first. Then
   ``score = timbre_weight * ((1 - profile_weight) * timbre + profile_weight * profile)
   + (1 - timbre_weight) * melody``.
4. The query singer(s) are excluded; ``filters`` restrict singers by metadata; ``diversity > 0`` re-ranks
   with maximal marginal relevance (MMR) on singer timbre vectors.

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
from encoders.expression import EXPRESSION_FEATURES
from encoders.profile import VoiceFeatureEmbedder
from index.faiss_index import load_index, search
from index.store import KINDS, check_encoders, has_current_expression, read_info

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
PROFILE_WEIGHT = 0.98  # share of the voice score given to the voice profile (chosen on a validation catalogue,
                       # seed 7: BENCHMARKS.md "Voice profile, session 5"; 1.0 scored 0.001-0.002 higher there,
                       # within noise, and would drop the timbre vectors from the score, also where the profile is
                       # only the expression descriptors)
RESULT_COLUMNS = ["rank", "singer", "score", "timbre_score", "melody_score", "profile_score", "query_song",
                  "match_song"]


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
    vectors: dict          # kind -> (Q, d) query song vectors ("profile": the song profiles, if indexed)
    weights: np.ndarray    # (Q,) summing to 1
    labels: list           # (Q,) query song ids (or the clip label)
    exclude: set           # singers not to recommend
    by_singer: bool = True  # a singer / mix query (profiles compared as singers'), else songs / a clip
    profile: np.ndarray | None = None  # (D,) a singer / mix query's profile: its singers' profiles, weighted


# ---------------------------------------------------------------------------------------------- recommender
class Recommender:
    """Similar-singer search over a finished index directory (see index/store.py)."""

    def __init__(self, index_dir: Path, info: dict, songs: pd.DataFrame, singers: pd.DataFrame,
                 map_df: pd.DataFrame, song_vectors: dict, singer_vectors: dict, song_indexes: dict,
                 failures: pd.DataFrame, song_profile: np.ndarray | None = None,
                 singer_profile: np.ndarray | None = None, profile_kind: str | None = None):
        self.index_dir, self.info = index_dir, info
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
        # voice profiles ("profile": estimates, standardised by the head; "expression": raw descriptors of an
        # index without a head) and their standardisation over the catalogue's singers and songs
        self.song_profile, self.singer_profile = song_profile, singer_profile
        self.profile_kind = profile_kind if singer_profile is not None else None
        self._head = None
        if singer_profile is not None:
            x = np.asarray(singer_profile, np.float64)
            self._prof_mean = x.mean(0)
            self._prof_scale = self._scoring_scale(np.maximum(x.std(0), 1e-6))
            self._singer_prof_z = (x - self._prof_mean) / self._prof_scale  # (S, D)
        if song_profile is not None:
            x = np.asarray(song_profile, np.float64)
            self._song_prof_mean = x.mean(0)
            self._song_prof_scale = self._scoring_scale(np.maximum(x.std(0), 1e-6))
            self._song_prof_z = ((x - self._song_prof_mean) / self._song_prof_scale).astype(np.float32)  # (N, D)
        # candidate limits (module defaults; tests and benchmarks change them per recommender)
        self.exact_singers, self.rescore_singers = EXACT_SINGERS, RESCORE_SINGERS
        self._singer_names = singers["singer"].to_numpy(dtype=object)
        self._singer_meta = {c: singers[c].to_numpy() for c in self.metadata_columns}
        self._map_songs = map_df[map_df["kind"] == "song"].set_index("id").reindex(songs["song_id"])

    @classmethod
    def load(cls, index_dir: str | Path) -> "Recommender":
        """Open an index directory (format version checked); vectors are memory-mapped."""
        index_dir = Path(index_dir)
        info = read_info(index_dir)
        try:
            songs = pd.read_parquet(index_dir / "songs.parquet")
            singers = pd.read_parquet(index_dir / "singers.parquet")
            map_df = pd.read_parquet(index_dir / "map.parquet")
            song_vectors = {k: np.load(index_dir / "embeddings" / f"songs_{k}.npy", mmap_mode="r") for k in KINDS}
            singer_vectors = {k: np.load(index_dir / "embeddings" / f"singers_{k}.npy") for k in KINDS}
        except (OSError, ValueError) as exc:
            raise SingrecError(f"index files are missing or unreadable ({exc})", index_dir) from exc
        for k in KINDS:
            if len(song_vectors[k]) != len(songs) or len(singer_vectors[k]) != len(singers):
                raise SingrecError(f"{k} vectors do not match the song/singer tables; rebuild the index", index_dir)
        song_indexes = {k: load_index(index_dir / f"{k}_songs.faiss") for k in KINDS}
        fpath = index_dir / "failures.csv"
        failures = pd.read_csv(fpath) if fpath.is_file() and fpath.stat().st_size else pd.DataFrame()
        song_prof = singer_prof = kind = None
        emb = index_dir / "embeddings"
        if info.get("profile") and (emb / "singers_profile.npy").is_file():
            song_prof, singer_prof, kind = np.load(emb / "songs_profile.npy"), np.load(emb / "singers_profile.npy"), "profile"
        elif has_current_expression(info):
            log.info("%s has no voice profile: the profile score compares expression descriptors", index_dir)
            song_prof, singer_prof = np.load(emb / "songs_expression.npy"), np.load(emb / "singers_expression.npy")
            kind = "expression"
        else:
            log.warning("%s has no voice profile or current expression descriptors: rankings use timbre and "
                        "melody only (rebuild the index to add them)", index_dir)
        if singer_prof is not None and (len(singer_prof) != len(singers) or len(song_prof) != len(songs)):
            raise SingrecError(f"{kind} vectors do not match the song/singer tables; rebuild the index", index_dir)
        return cls(index_dir, info, songs, singers, map_df, song_vectors, singer_vectors, song_indexes, failures,
                   song_prof, singer_prof, kind)

    # ------------------------------------------------------------------ properties
    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.singers.columns if c not in ("singer", "n_songs")]

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

    def profile_head(self):
        """The voice profile head the index was built with (loaded on first use, checked by sha256)."""
        if self._head is None:
            from encoders.checkpoint import CHECKPOINT_DIR, file_sha256, load_encoder
            rec = self.info["profile"]
            candidates = [Path(p) for p in (rec.get("checkpoint_path"), CHECKPOINT_DIR / (rec.get("checkpoint") or
                                                                                          "profile.pt")) if p]
            path = next((p for p in candidates if p.is_file() and file_sha256(p) == rec.get("sha256")), None)
            if path is None:
                raise SingrecError(f"the voice profile head this index was built with is not available "
                                   f"({rec.get('checkpoint')}, sha256 {str(rec.get('sha256'))[:12]}...); audio "
                                   "queries need it. `singrec index CATALOGUE --out INDEX_DIR --append` recomputes "
                                   "the index's profiles with the current head without embedding the songs again",
                                   self.index_dir)
            self._head = load_encoder(path, kind="profile")
        return self._head

    def embed_clip(self, source) -> dict:
        """Embed an audio file or waveform with the index's encoders, and its voice profile: {kind: (d,)}."""
        from encoders.embed import embed_songs

        encs = self.encoders()
        head = self.profile_head() if self.profile_kind == "profile" else None
        voice = VoiceFeatureEmbedder(features=encs["timbre"].features, head=head)  # + the head's frame networks
        out = embed_songs([source], {**encs, "voice": voice}, progress=False, workers=1)
        voice = out.pop("voice")
        if head is not None:
            out["profile"] = head.predict(voice, out["timbre"]).astype(np.float32)
        elif self.profile_kind == "expression":
            out["profile"] = voice[:, :len(EXPRESSION_FEATURES)]
        return {k: v[0] for k, v in out.items()}

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
            rows, weights, exclude, profile = [], [], set(), None
            total = float(sum(query.weights.values()))
            if total <= 0 or any(w < 0 for w in query.weights.values()):
                raise SingrecError("mix weights must be non-negative and not all zero")
            for name, w in query.weights.items():
                name = self.resolve_singer(name)
                exclude.add(name)
                songs = self._songs_of_singer[self._singer_row[name]]
                rows += songs.tolist()
                weights += [w / total / len(songs)] * len(songs)
                if self.singer_profile is not None:  # a singer's profile is read from all its songs at once
                    share = w / total * np.asarray(self.singer_profile[self._singer_row[name]], np.float64)
                    profile = share if profile is None else profile + share
            rows = np.array(rows)
            return _QuerySet(self._song_rows(rows), np.array(weights), self._song_ids[rows].tolist(), exclude,
                             profile=profile)
        if isinstance(query, Song):
            if query.song_id not in self._song_row:
                close = difflib.get_close_matches(query.song_id, list(self._song_row), n=5, cutoff=0.5)
                raise SingrecError(f"unknown song {query.song_id!r}" + (f"; closest: {', '.join(close)}" if close else ""))
            r = self._song_row[query.song_id]
            exclude = {self.songs["singer"].iloc[r]} if query.exclude_singer else set()
            return _QuerySet(self._song_rows(np.array([r])), np.ones(1), [query.song_id], exclude, by_singer=False)
        if isinstance(query, Audio):
            query = Embedded(self.embed_clip(query.source), query.label)
        if isinstance(query, Embedded):
            return _QuerySet({k: np.asarray(v)[None] for k, v in query.vectors.items()}, np.ones(1), [query.label],
                             set(), by_singer=False)
        raise SingrecError(f"unsupported query type {type(query).__name__}")

    def song(self, song_id: str) -> pd.Series | None:
        """The ``songs.parquet`` row of a song id (path, singer, metadata), or None if it is not indexed."""
        row = self._song_row.get(song_id)
        return None if row is None else self.songs.iloc[row]

    def _song_rows(self, rows: np.ndarray) -> dict:
        """{kind: (Q, d)} vectors of catalogue song rows (and their voice profiles, if indexed)."""
        out = {k: np.asarray(self.song_vectors[k][rows]) for k in KINDS}
        if self.song_profile is not None:
            out["profile"] = np.asarray(self.song_profile[rows])
        return out

    def _scoring_scale(self, std: np.ndarray) -> np.ndarray:
        """Per-entry divisor of profile differences in the profile score: raw expression descriptors are
        standardised one by one; a head's estimates share one spread (their root-mean-square spread), so a
        parameter the head estimates poorly keeps the smaller spread the head's shrinkage gives it instead of
        being stretched to the weight of a well-estimated one. Default ranking's nDCG@10 with session 4's head,
        common against per-parameter spread: 0.695 / 0.692 on validation seed 7, 0.674 / 0.671 on held-out
        seed 1 (BENCHMARKS.md, "Voice profile, session 4"; not re-measured with the frame networks)."""
        if self.profile_kind != "profile":
            return std
        return np.full_like(std, np.sqrt(np.mean(std ** 2)))

    def profile_scores(self, q: "_QuerySet", rows: np.ndarray) -> np.ndarray:
        """(C,) profile similarity of the query to singer ``rows`` (see the module docstring)."""
        p = q.profile if q.profile is not None else q.weights @ np.asarray(q.vectors["profile"], np.float64)
        zq = (p - self._prof_mean) / self._prof_scale
        d2 = ((self._singer_prof_z[rows] - zq) ** 2).sum(1)  # (C,)
        return 1.0 - d2 / (2 * len(zq))

    def singer_profile_of(self, singer: str) -> np.ndarray | None:
        """A singer's voice profile (as indexed: standardised estimates, or raw expression descriptors), or
        None if the index has none."""
        if self.singer_profile is None:
            return None
        return np.asarray(self.singer_profile[self._singer_row[self.resolve_singer(singer)]], np.float64)

    def profile_names(self) -> list[str]:
        """Names (with units) of the profile's entries."""
        if self.profile_kind == "profile":
            rec = self.info["profile"]
            return [f"{p} ({u})" if u else p for p, u in zip(rec["params"], rec["units"])]
        return list(EXPRESSION_FEATURES) if self.profile_kind == "expression" else []

    def compare_profile(self, query: np.ndarray, singer: str, *, query_label: str = "query") -> pd.DataFrame:
        """Side by side: ``query``'s voice profile (e.g. a singer's or a clip's, as indexed) and ``singer``'s.

        Returns a DataFrame with columns parameter, ``query_label``, the singer's name (both in the
        parameters' own units: estimates are converted with the head's training mean and spread) and
        ``difference`` (in the unit of a singer query's ``profile_score``: estimates divided by their common
        spread over the catalogue's singers, expression descriptors by each one's spread); empty when the
        index has no profile.
        """
        other = self.singer_profile_of(singer)
        if other is None:
            return pd.DataFrame(columns=["parameter", query_label, singer, "difference"])
        q = np.asarray(query, np.float64)
        diff = (other - q) / self._prof_scale
        if self.profile_kind == "profile":  # standardised estimates -> units
            mean, std = np.asarray(self.info["profile"]["mean"]), np.asarray(self.info["profile"]["std"])
            q, other = q * std + mean, other * std + mean
        return pd.DataFrame({"parameter": self.profile_names(), query_label: q, singer: other, "difference": diff})

    # ------------------------------------------------------------------ ranking
    def _allowed_singers(self, filters: Mapping | None) -> np.ndarray:
        mask = np.ones(len(self.singers), bool)
        for col, want in (filters or {}).items():
            if col not in self.singers.columns:
                raise SingrecError(f"cannot filter on {col!r}: singer columns are {self.metadata_columns}")
            values = [want] if isinstance(want, (str, int, float, bool)) else list(want)
            col_values = self.singers[col]
            mask &= col_values.isin(values).to_numpy() | col_values.astype(str).isin([str(v) for v in values]).to_numpy()
        return mask

    def similar_singers(self, query: Query, k: int = 10, timbre_weight: float = 0.7,
                        filters: Mapping | None = None, diversity: float = 0.0,
                        profile_weight: float | None = PROFILE_WEIGHT) -> pd.DataFrame:
        """Rank singers similar to ``query``.

        Parameters
        ----------
        query : singer name, :class:`Singer`, :class:`Song`, :class:`Audio`, :class:`Embedded` or :class:`Mix`
        k : number of singers returned
        timbre_weight : weight of the timbre score in [0, 1]; the melody score gets the rest
        filters : ``{column: value or [values]}`` on singer metadata (e.g. ``{"gender": "f"}``)
        diversity : 0 = pure relevance; up to 1 = MMR re-ranking that spreads results over voice space
        profile_weight : share of the voice (timbre) part given to the voice profile, in [0, 1]; ignored
            (profile_score NaN) when the index has none; None = ``PROFILE_WEIGHT``

        Returns
        -------
        DataFrame with columns rank, singer, score, timbre_score, melody_score, profile_score, query_song,
        match_song and the singer metadata columns, best first.
        """
        profile_weight = PROFILE_WEIGHT if profile_weight is None else profile_weight
        with _BLAS.limit(limits=1):  # BLAS and OpenMP (FAISS)
            return self._similar_singers(query, k, timbre_weight, filters, diversity, profile_weight)

    def _similar_singers(self, query, k, timbre_weight, filters, diversity, profile_weight) -> pd.DataFrame:
        if not 0.0 <= timbre_weight <= 1.0:
            raise SingrecError(f"timbre_weight must be in [0, 1], got {timbre_weight}")
        if not 0.0 <= profile_weight <= 1.0:
            raise SingrecError(f"profile_weight must be in [0, 1], got {profile_weight}")
        if not 0.0 <= diversity <= 1.0:
            raise SingrecError(f"diversity must be in [0, 1], got {diversity}")
        if k < 1:
            raise SingrecError(f"k must be at least 1, got {k}")
        q = self._query_set(query)
        allowed = self._allowed_singers(filters)
        for name in q.exclude:
            allowed[self._singer_row[name]] = False

        cand = self._candidates(q, allowed, k, timbre_weight, profile_weight)
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
        e = None
        if "profile" in q.vectors and self.song_profile is not None and not q.by_singer:
            zq = ((np.asarray(q.vectors["profile"], np.float64) - self._song_prof_mean)
                  / self._song_prof_scale).astype(np.float32)  # (Q, D)
            zs = self._song_prof_z[flat]  # (R, D)
            d2 = (zq ** 2).sum(1)[:, None] + (zs ** 2).sum(1)[None, :] - 2 * zq @ zs.T  # (Q, R)
            e = (1 - d2 / (2 * zq.shape[1]))[:, pos]  # (Q, C, M)
            voice = (1 - profile_weight) * t + profile_weight * e  # (Q, C, M)
        else:
            voice = t
        fused = np.where(valid, timbre_weight * voice + (1 - timbre_weight) * m, -np.inf)  # (Q, C, M)
        top = min(TOP_SONGS, width)
        best = np.argpartition(-fused, top - 1, axis=2)[:, :, :top]  # (Q, C, top) each singer's best songs
        picked_ok = np.take_along_axis(np.broadcast_to(valid, fused.shape), best, axis=2)  # (Q, C, top)
        n_top = np.minimum(lens, TOP_SONGS)  # (C,)

        def mean_top(a):  # (Q, C, M) -> (C,): mean over the best songs, weighted over query songs
            picked = np.where(picked_ok, np.take_along_axis(a, best, axis=2), 0.0)  # (Q, C, top)
            return q.weights @ (picked.sum(2) / n_top)

        score, t_score, m_score = mean_top(fused), mean_top(t), mean_top(m)  # (C,) each
        if e is not None:
            e_score = mean_top(e)
        elif "profile" in q.vectors and self.singer_profile is not None:
            e_score = self.profile_scores(q, cand)  # (C,)
            score = score + timbre_weight * profile_weight * (e_score - t_score)
        else:
            e_score = np.full(len(cand), np.nan)
        order = np.lexsort((cand, -score))  # best first, ties by singer row (deterministic)
        order = order[self._mmr(cand[order], score[order], k, diversity)] if diversity > 0 else order[:k]
        # only the k returned rows are assembled (a DataFrame over all candidates cost more than the scoring)
        joint = fused[:, order].transpose(1, 0, 2).reshape(len(order), -1).argmax(1)  # (k,) best pair
        pair_q, pair_m = np.divmod(joint, width)
        rows = cand[order]
        out = {"rank": np.arange(1, len(order) + 1), "singer": self._singer_names[rows],
               "score": score[order], "timbre_score": t_score[order], "melody_score": m_score[order],
               "profile_score": e_score[order],
               "query_song": [q.labels[i] for i in pair_q],
               "match_song": self._song_ids[flat[pos[order, pair_m]]]}
        out.update({c: v[rows] for c, v in self._singer_meta.items()})
        return pd.DataFrame(out)

    def _candidates(self, q: _QuerySet, allowed: np.ndarray, k: int, timbre_weight: float,
                    profile_weight: float = 0.0) -> np.ndarray:
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
            voice = sims["timbre"][cand]
            if "profile" in q.vectors and self.singer_profile is not None:
                voice = (1 - profile_weight) * voice + profile_weight * self.profile_scores(q, cand)
            proxy = timbre_weight * voice + (1 - timbre_weight) * sims["melody"][cand]
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
        return {"index_dir": str(self.index_dir), **{k: self.info[k] for k in ("counts", "faiss", "dims")}}


def to_json(df: pd.DataFrame) -> str:
    """Results as JSON records (what ``singrec similar --json`` prints)."""
    return json.dumps(json.loads(df.to_json(orient="records")), indent=2)
