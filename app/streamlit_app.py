"""singrec explorer: the Streamlit page.

Run it with ``singrec app INDEX_DIR`` or ``streamlit run app/streamlit_app.py -- INDEX_DIR`` (or set
``SINGREC_INDEX``). The page computes nothing itself: the map, clusters, embeddings and rankings all come
from :class:`recsys.rank.Recommender`; this file only lays them out.

The page follows the index: every rerun reads the published snapshot id (``INDEX_DIR/CURRENT``, a few bytes)
and the cached Recommender and results are keyed on it, so a rebuild is picked up at the next interaction
without a restart (a notice says so).

Layout: a sidebar with the query (a singer, or an uploaded clip), the ranking options and the map options;
the map beside the ranked results; below them the best-matching song pair to listen to, the points
selected on the map, and the clusters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from app import explorer
from data.errors import SingrecError
from index.store import current_snapshot_id
from recsys.rank import RESULT_COLUMNS, TIMBRE_WEIGHT, Embedded, Recommender

MODE_SINGER = "Singer"
MODE_CLIP = "Clip"
MAP_KINDS = {"Songs": "song", "Singers": "singer"}


# --------------------------------------------------------------------------------------------- cached data


class IndexRef(NamedTuple):
    """The index directory and its published snapshot id: the key of every cached value below."""

    path: str
    snapshot: str


@st.cache_resource(show_spinner="Loading the index ...", max_entries=2)
def load_recommender(index_dir: IndexRef) -> Recommender:
    return Recommender.load(index_dir.path)


@st.cache_data(show_spinner=False, max_entries=512)
def similar_to_singer(index_dir: IndexRef, singer: str, k: int, timbre_weight: float, filters: tuple,
                      diversity: float) -> pd.DataFrame:
    rec = load_recommender(index_dir)
    return rec.similar_singers(singer, k=k, timbre_weight=timbre_weight,
                               filters=explorer.thaw_filters(filters), diversity=diversity)


@st.cache_data(show_spinner="Listening to the clip ...", max_entries=32)
def embed_upload(index_dir: IndexRef, digest: str, name: str, _data: bytes) -> explorer.Clip:
    """Decode, embed and place an uploaded clip; cached on the bytes' sha256 (``digest``)."""
    return explorer.prepare_clip(load_recommender(index_dir), name, _data)


@st.cache_data(show_spinner="Ranking singers ...", max_entries=128)
def similar_to_clip(index_dir: IndexRef, digest: str, k: int, timbre_weight: float, filters: tuple,
                    diversity: float, _clip: explorer.Clip) -> pd.DataFrame:
    rec = load_recommender(index_dir)
    return rec.similar_singers(Embedded(_clip.vectors, label=_clip.name), k=k, timbre_weight=timbre_weight,
                               filters=explorer.thaw_filters(filters), diversity=diversity)


@st.cache_data(show_spinner=False)
def cluster_table(index_dir: IndexRef) -> pd.DataFrame:
    return load_recommender(index_dir).clusters()


@st.cache_data(show_spinner=False)
def filter_options(index_dir: IndexRef) -> dict[str, list]:
    """{metadata column as named in the catalogue: its values} for the filters (see Recommender.metadata_column)."""
    rec = load_recommender(index_dir)
    by_column = explorer.filter_options(rec.singers, rec.metadata_columns)
    return {name: by_column[col] for name, col in rec.filter_columns.items() if col in by_column}


# --------------------------------------------------------------------------------------------- choices


@dataclass
class Query:
    mode: str
    singer: str | None = None
    upload_name: str | None = None
    upload_bytes: bytes | None = None
    upload_type: str | None = None


@dataclass
class Options:
    k: int = 10
    timbre_weight: float = TIMBRE_WEIGHT
    diversity: float = 0.0
    filters: dict | None = None

    @property
    def frozen(self) -> tuple:
        return explorer.freeze_filters(self.filters)


@dataclass
class MapOptions:
    kind: str = "song"
    colour_by: str = "cluster"


@dataclass
class Outcome:
    """The current query's results and what to highlight; ``error`` is set instead when it failed."""

    title: str = ""
    results: pd.DataFrame | None = None
    highlight: explorer.Highlight = field(default_factory=explorer.Highlight)
    clip: explorer.Clip | None = None
    error: str | None = None
    csv_name: str = "singrec_results.csv"


def query_ui(rec: Recommender) -> Query:
    """Sidebar: what to find similar singers for."""
    st.sidebar.subheader("Who sounds like ...")
    mode = st.sidebar.segmented_control("Query by", [MODE_SINGER, MODE_CLIP], default=MODE_SINGER,
                                        required=True, key="mode", label_visibility="collapsed") or MODE_SINGER
    if mode == MODE_CLIP:
        up = st.sidebar.file_uploader(
            f"An audio clip of one singer (wav, flac, ogg or mp3; at most {explorer.MAX_UPLOAD_MB} MB)",
            type=list(explorer.UPLOAD_ACCEPT), max_upload_size=explorer.MAX_UPLOAD_MB, key="clip")
        if up is None:
            return Query(mode)
        return Query(mode, upload_name=up.name, upload_bytes=up.getvalue(), upload_type=up.type)
    singers = rec.singers["singer"].astype(str).tolist()
    singer = st.sidebar.selectbox("Singer", singers, index=0, key="singer",
                                  help="Type to search. Default: the first singer of the catalogue.")
    return Query(mode, singer=singer)


def options_ui(rec: Recommender, index_dir: IndexRef) -> Options:
    """Sidebar: ranking options and metadata filters."""
    sb = st.sidebar
    w = sb.slider("Timbre vs melody", 0.0, 1.0, TIMBRE_WEIGHT, 0.05, key="timbre_weight",
                  help="Weight of the timbre score in the total; the rest is the melody score. "
                       "1 = only how the voice sounds, 0 = only what is sung.")
    k = sb.slider("Results", 3, 30, 10, 1, key="k")
    div = sb.slider("Diversity", 0.0, 1.0, 0.0, 0.05, key="diversity",
                    help="Trade some similarity for results that differ from each other.")
    opts = filter_options(index_dir)
    choices = {}
    if opts:
        with sb.expander("Filters", expanded=False):
            for col, values in opts.items():
                choices[col] = st.multiselect(col.replace("_", " "), values, key=f"filter_{col}")
    return Options(k=k, timbre_weight=w, diversity=div, filters=explorer.filters_dict(choices))


def map_options_ui(rec: Recommender) -> MapOptions:
    """Sidebar: which map and how to colour it."""
    sb = st.sidebar
    sb.subheader("Map")
    kind_label = sb.segmented_control("Points", list(MAP_KINDS), default="Songs", required=True,
                                      key="map_kind") or "Songs"
    computed = ["cluster", "singer"]
    label = {col: name if name not in computed else f"{name} (catalogue)"  # user columns by their names
             for name, col in rec.filter_columns.items() if col in rec.map.columns}
    colour_by = sb.selectbox("Colour by", computed + list(label), index=0, key="colour_by",
                             format_func=lambda c: label.get(c, c))
    return MapOptions(kind=MAP_KINDS[kind_label], colour_by=colour_by)


# --------------------------------------------------------------------------------------------- query


def run_query(index_dir: IndexRef, query: Query, opts: Options) -> Outcome:
    """Run the chosen query through the (cached) Recommender; a SingrecError becomes ``Outcome.error``."""
    try:
        if query.mode == MODE_CLIP:
            if query.upload_bytes is None:
                return Outcome(title="Upload a clip to find singers who sound like it")
            digest = explorer.digest_bytes(query.upload_bytes)
            clip = embed_upload(index_dir, digest, query.upload_name or "clip", query.upload_bytes)
            res = similar_to_clip(index_dir, digest, opts.k, opts.timbre_weight, opts.frozen, opts.diversity, clip)
            return Outcome(title=f"Singers who sound like {clip.name}", results=res, clip=clip,
                           highlight=explorer.Highlight(clip_xy=clip.xy, results=res),
                           csv_name=f"singrec_like_{explorer.slug(Path(clip.name).stem)}.csv")
        res = similar_to_singer(index_dir, query.singer, opts.k, opts.timbre_weight, opts.frozen, opts.diversity)
        return Outcome(title=f"Singers who sound like {query.singer}", results=res,
                       highlight=explorer.Highlight(query_singer=query.singer, results=res),
                       csv_name=f"singrec_like_{explorer.slug(query.singer)}.csv")
    except SingrecError as exc:
        return Outcome(title="Could not run this query", error=str(exc))


# --------------------------------------------------------------------------------------------- views


def map_ui(rec: Recommender, mopts: MapOptions, outcome: Outcome) -> pd.DataFrame:
    """The map (WebGL scatter); returns the map rows the user selected (click, box or lasso)."""
    fig = explorer.map_figure(rec.map, kind=mopts.kind, colour_by=mopts.colour_by,
                              metadata_columns=rec.metadata_columns, highlight=outcome.highlight)
    event = st.plotly_chart(fig, key=f"map_{mopts.kind}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False, "scrollZoom": True})
    points = event.selection.points if event and getattr(event, "selection", None) else []
    return explorer.selected_rows(rec.map, points)


def results_ui(outcome: Outcome) -> int:
    """Ranked results with score bars; returns the row (position) chosen for listening (default: top)."""
    st.subheader(outcome.title)
    if outcome.error:
        st.error(outcome.error)
        return -1
    res = outcome.results
    if res is None:
        st.info("Upload a recording of one singer in the sidebar; its results appear here and the map shows "
                "where it lands.")
        return -1
    if res.empty:
        st.warning("No singer matches these filters.")
        return -1
    top = res.iloc[0]
    st.caption(f"Top match: **{top['singer']}** (score {top['score']:.3f}). "
               "Click a row to listen to its best-matching song pair below.")
    lo = float(min(0.0, res[["score", "timbre_score", "melody_score"]].min().min()))
    bar = dict(min_value=lo, max_value=1.0, format="%.3f")
    shown = [c for c in explorer.ATTRIBUTE_LABELS if c in res.columns]  # predicted / measured voice attributes
    meta = shown + [c for c in res.columns if c not in RESULT_COLUMNS and c not in explorer.HIDDEN_ATTRIBUTES
                    and c not in shown]
    event = st.dataframe(
        res, key="results", hide_index=True, on_select="rerun", selection_mode="single-row",
        column_order=["rank", "singer", "score", "timbre_score", "melody_score", "match_song", "query_song", *meta],
        column_config={
            "rank": st.column_config.NumberColumn("#", width=32),
            "singer": st.column_config.TextColumn("singer"),
            "score": st.column_config.ProgressColumn("total", help="Weighted total score", width=84, **bar),
            "timbre_score": st.column_config.ProgressColumn("timbre", help="Timbre similarity", width=84, **bar),
            "melody_score": st.column_config.ProgressColumn("melody", help="Melody similarity", width=84, **bar),
            "match_song": st.column_config.TextColumn("their song", help="Their best-matching song"),
            "query_song": st.column_config.TextColumn("query song", help="The query's song in the best pair"),
            **{c: st.column_config.TextColumn(label, help=help_) for c, (label, help_) in
               explorer.ATTRIBUTE_LABELS.items()},
        })
    st.download_button("Download results (CSV)", res.to_csv(index=False).encode(), file_name=outcome.csv_name,
                       mime="text/csv", icon=":material/download:", key="download")
    rows = event.selection.rows if event and getattr(event, "selection", None) else []
    return int(rows[0]) if rows else 0


def _play(path, caption: str) -> None:
    st.markdown(caption)
    try:
        st.audio(str(path))
    except (OSError, ValueError) as exc:
        st.caption(f"audio unavailable: {exc}")


def listen_ui(rec: Recommender, query: Query, opts: Options, outcome: Outcome, row: int) -> None:
    """The best-matching song pair of the chosen result, with audio players for both songs."""
    res = outcome.results
    if res is None or res.empty or row < 0:
        return
    r = res.iloc[min(row, len(res) - 1)]
    st.markdown(f"**Why #{int(r['rank'])} {r['singer']}?** Their best-matching song pair:")
    st.caption(f"total {r['score']:.3f} from timbre {r['timbre_score']:.3f} and melody {r['melody_score']:.3f} "
               f"(timbre weight {opts.timbre_weight:.2f})")
    left, right = st.columns(2)
    with left:
        if outcome.clip is not None:
            st.markdown(f"**Your clip** · {outcome.clip.name} ({outcome.clip.seconds:.1f} s)")
            st.audio(query.upload_bytes, format=query.upload_type or "audio/wav")
        elif (s := rec.song(str(r["query_song"]))) is not None:
            _play(s["path"], f"**{s['singer']}** (query) · {r['query_song']}")
    with right:
        if (s := rec.song(str(r["match_song"]))) is not None:
            _play(s["path"], f"**{s['singer']}** (#{int(r['rank'])}) · {r['match_song']}")


def selection_ui(selected: pd.DataFrame, kind: str) -> None:
    if selected.empty:
        st.caption("Click a point or draw a lasso / box on the map to list the selected "
                   f"{'songs' if kind == 'song' else 'singers'} here.")
        return
    st.markdown(f"**{len(selected)} selected on the map**")
    cols = [c for c in selected.columns if c not in ("kind", "x", "y")]
    shown = selected[cols].rename(columns={"id": "song" if kind == "song" else "id"})
    if kind == "singer":
        shown = shown.drop(columns=["id"])
    st.dataframe(shown, hide_index=True, height=min(36 + 35 * len(shown), 300), key="selected")


def clusters_ui(rec: Recommender, index_dir: IndexRef, query: Query) -> None:
    """Cluster sizes, and the singers of a chosen cluster (default: the query singer's cluster)."""
    clusters = cluster_table(index_dir)
    if clusters.empty:
        st.caption("No clusters in this index.")
        return
    ids = clusters.sort_values("cluster")["cluster"].tolist()
    default = 0
    if query.singer is not None:
        m = rec.map[(rec.map["kind"] == "singer") & (rec.map["singer"] == query.singer)]
        if len(m) and m["cluster"].iloc[0] in ids:
            default = ids.index(m["cluster"].iloc[0])
    left, right = st.columns([2, 3])
    with right:
        chosen = st.selectbox("Cluster", ids, index=default, key="cluster",
                              format_func=lambda c: f"cluster {c}" if c != -1 else "noise (-1)")
        row = clusters[clusters["cluster"] == chosen].iloc[0]
        names = row["singers"]
        names = [s.strip() for s in names.split(",")] if isinstance(names, str) else list(names)
        st.caption(f"cluster {chosen}: {int(row['n_songs'])} songs by {int(row['n_singers'])} singers")
        table = rec.singers[rec.singers["singer"].isin(names)]
        st.dataframe(table, hide_index=True, height=min(36 + 35 * len(table), 320), key="cluster_singers")
    with left:
        st.plotly_chart(explorer.cluster_figure(clusters, chosen), key="cluster_sizes",
                        config={"displayModeBar": False})


def header_ui(rec: Recommender, index_dir: IndexRef) -> None:
    st.markdown(  # less empty space above the title
        "<style>[data-testid='stMainBlockContainer'], .block-container {padding-top: 2.2rem;}</style>",
        unsafe_allow_html=True)
    st.markdown("## singrec · singers who sound alike")
    st.caption(f"{len(rec.singers)} singers · {len(rec.songs)} songs · index `{index_dir.path}` "
               f"(snapshot {rec.snapshot}) · "
               "timbre + melody encoders, FAISS, UMAP map")


# --------------------------------------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="singrec explorer", page_icon=":material/graphic_eq:", layout="wide")
    index_dir = explorer.resolve_index_dir()
    if index_dir is None:
        st.error(f"No index to show. Start the page with `singrec app INDEX_DIR`, or set {explorer.ENV_VAR}.")
        st.stop()
    key = IndexRef(str(index_dir), current_snapshot_id(index_dir) or "")  # re-read on every rerun (cheap)
    try:
        rec = load_recommender(key)
    except SingrecError as exc:
        st.error(f"Cannot open the index: {exc}")
        st.stop()
    seen = st.session_state.get("snapshot")
    if seen is not None and seen != rec.snapshot:
        st.toast(f"The index was rebuilt: now showing snapshot {rec.snapshot}.", icon=":material/sync:")
    st.session_state["snapshot"] = rec.snapshot

    header_ui(rec, key)
    query = query_ui(rec)
    opts = options_ui(rec, key)
    mopts = map_options_ui(rec)
    st.sidebar.caption(f"{len(rec.singers)} singers, {len(rec.songs)} songs")
    outcome = run_query(key, query, opts)

    left, right = st.columns([11, 9], gap="medium")
    with right:
        row = results_ui(outcome)
    with left:
        selected = map_ui(rec, mopts, outcome)
        selection_ui(selected, mopts.kind)
    # Lazy tabs: only the open tab's content is computed and sent, so the first paint carries just the
    # map, the results and the song pair (the clusters' second chart and table would cost ~2 s of browser
    # time on a busy machine; see BENCHMARKS.md "App").
    listen_tab, clusters_tab = st.tabs(["Listen: the best-matching song pair", "Clusters"], key="section",
                                       on_change="rerun")
    with listen_tab:
        if listen_tab.open is not False:
            listen_ui(rec, query, opts, outcome, row)
    with clusters_tab:
        if clusters_tab.open:
            clusters_ui(rec, key, query)


if __name__ == "__main__":
    main()
