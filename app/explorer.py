"""Plain (Streamlit-free) helpers of the explorer page: where the index is, uploaded clips, the map figure.

Everything here is importable and testable without a running Streamlit script. The computation itself
(embedding, ranking, the UMAP map, clusters) lives in :mod:`recsys.rank`; this module only reads its results
and turns them into figures and tables.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly import colors as pcolors

from data.audio import AUDIO_EXTENSIONS, DEFAULT_SR, load_audio
from data.errors import SingrecError

ENV_VAR = "SINGREC_INDEX"
DEFAULT_INDEX = Path("demo_data") / "index"
MAX_UPLOAD_MB = 20
MAX_CLIP_SECONDS = 180.0  # only the first 3 minutes of an uploaded clip are used
UPLOAD_TYPES = tuple(ext.lstrip(".") for ext in AUDIO_EXTENSIONS)  # wav, flac, ogg, mp3
# The uploader's ``type``: the browser's file picker offers these audio files. "audio/*" is there so that
# streamlit does not refuse other names itself (it would raise before the page script runs and leave a blank
# page); :func:`decode_upload` refuses them with a message and the page goes on.
UPLOAD_ACCEPT = (*UPLOAD_TYPES, "audio/*")

QUERY_COLOUR = "#111111"   # outline of the query star
QUERY_FILL = "#ffd400"
RESULT_COLOUR = "#1f1f1f"  # rings and rank labels of the results
NOISE_COLOUR = "#c8c8c8"


# --------------------------------------------------------------------------------------------- index


def resolve_index_dir(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
                      script: str | Path | None = None) -> Path | None:
    """The index directory the page shows.

    Order: the first argument after ``--`` of ``streamlit run app/streamlit_app.py -- INDEX_DIR`` (Streamlit
    passes it as ``sys.argv[1]``; only trusted when ``sys.argv[0]`` is the page script itself, so a test
    runner's own arguments are never mistaken for it), then the ``SINGREC_INDEX`` environment variable, then
    ``demo_data/index`` if it exists. ``None`` when there is none.
    """
    import sys

    argv = list(sys.argv if argv is None else argv)
    environ = os.environ if environ is None else environ
    script = Path(script) if script is not None else Path(__file__).with_name("streamlit_app.py")
    if len(argv) >= 2 and argv[0] and Path(argv[0]).name == script.name and not argv[1].startswith("-"):
        return Path(argv[1]).expanduser()
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser()
    if DEFAULT_INDEX.joinpath("CURRENT").is_file():
        return DEFAULT_INDEX
    return None


# --------------------------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """An uploaded clip, decoded and embedded once (cached by the page on :attr:`digest`)."""

    name: str
    digest: str
    waveform: np.ndarray          # mono float32 @ 16 kHz (at most MAX_CLIP_SECONDS)
    vectors: dict = field(repr=False)  # {"timbre", "melody": (d,)} from Recommender.embed_clip
    xy: tuple[float, float] = (float("nan"), float("nan"))  # placement on the map

    @property
    def seconds(self) -> float:
        return self.waveform.size / DEFAULT_SR


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_upload(name: str, data: bytes, *, max_mb: float = MAX_UPLOAD_MB,
                  max_seconds: float = MAX_CLIP_SECONDS) -> np.ndarray:
    """Uploaded bytes -> mono float32 waveform at 16 kHz.

    Raises
    ------
    SingrecError : too large, wrong type, empty, unreadable, silent or too short; the message names the
        uploaded file (never the temporary copy) and the reason.
    """
    name = Path(name or "clip").name
    size_mb = len(data) / 2 ** 20
    if size_mb > max_mb:
        raise SingrecError(f"file is too large ({size_mb:.1f} MB; at most {max_mb:g} MB)", name)
    suffix = Path(name).suffix.lower()
    if suffix not in AUDIO_EXTENSIONS:
        raise SingrecError(f"unsupported audio type {suffix or '(none)'!r} "
                           f"(supported: {', '.join(AUDIO_EXTENSIONS)})", name)
    if not data:
        raise SingrecError("file is empty (0 bytes)", name)
    with tempfile.TemporaryDirectory(prefix="singrec-upload-") as tmp:
        path = Path(tmp) / ("clip" + suffix)
        path.write_bytes(data)
        try:
            return load_audio(path, max_seconds=max_seconds)
        except SingrecError as exc:
            raise SingrecError(exc.reason.replace(str(path), name), name) from None


def prepare_clip(rec, name: str, data: bytes) -> Clip:
    """Decode, embed (``rec.embed_clip``) and place (``rec.place_on_map``) an uploaded clip.

    Raises SingrecError (naming the uploaded file) for anything wrong with the audio.
    """
    name = Path(name or "clip").name
    y = decode_upload(name, data)
    try:
        vectors = rec.embed_clip(y)
    except SingrecError as exc:
        raise SingrecError(exc.reason, name) from None
    x, yy = rec.place_on_map(vectors)
    return Clip(name=name, digest=digest_bytes(data), waveform=y, vectors=vectors, xy=(float(x), float(yy)))


# --------------------------------------------------------------------------------------------- tables


# Voice attribute columns of an index (index/attributes.py): shown with these labels, marked as predicted or
# measured; the numeric columns behind them stay in the tables and the CSV but not in the results view.
ATTRIBUTE_LABELS = {
    "gender_pred": ("gender (predicted)", "Predicted from the voice (or the catalogue's label, where it was fitted "
                                          "on labels: gender_source)"),
    "voice_type_pred": ("voice type (predicted)", "From the measured range's centre and the gender"),
    "range_low": ("range low (measured)", "5th percentile of the sung pitch over voiced frames"),
    "range_high": ("range high (measured)", "95th percentile of the sung pitch over voiced frames"),
}
HIDDEN_ATTRIBUTES = ("gender_p", "gender_source", "range_low_midi", "range_centre_midi", "range_high_midi")


def filter_options(singers: pd.DataFrame, columns: Sequence[str], max_values: int = 40) -> dict[str, list]:
    """Metadata columns usable as multiselect filters -> their sorted distinct values.

    Numeric columns with many values (continuous measurements) and free-text columns with more than
    ``max_values`` distinct values are left out.
    """
    out: dict[str, list] = {}
    for col in columns:
        if col not in singers.columns:
            continue
        values = singers[col].dropna()
        try:
            uniq = sorted(values.unique().tolist())
        except TypeError:  # unhashable (lists) or mixed types
            continue
        if 1 < len(uniq) <= max_values:
            out[col] = uniq
    return out


def filters_dict(choices: Mapping[str, Sequence]) -> dict | None:
    """Multiselect choices -> the ``filters`` argument of ``similar_singers`` (empty choices are dropped)."""
    out = {col: list(vals) for col, vals in choices.items() if vals}
    return out or None


def freeze_filters(filters: Mapping[str, Sequence] | None) -> tuple:
    """A hashable, order-independent form of a filters dict (for caching)."""
    if not filters:
        return ()
    return tuple(sorted((str(c), tuple(sorted(map(str, v)) if not isinstance(v, str) else (v,)))
                        for c, v in filters.items()))


def thaw_filters(frozen: tuple) -> dict | None:
    return {c: list(v) for c, v in frozen} or None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")[:60] or "query"


# --------------------------------------------------------------------------------------------- map


@dataclass
class Highlight:
    """What to mark on the map: the query (a singer or a clip position) and the ranked results."""

    query_singer: str | None = None
    clip_xy: tuple[float, float] | None = None
    clip_label: str = "your clip"
    results: pd.DataFrame | None = None  # similar_singers output (rank, singer, match_song, ...)


def _palette(n: int) -> list[str]:
    if n <= 10:
        return list(pcolors.qualitative.T10)
    base = pcolors.qualitative.Dark24 + pcolors.qualitative.Light24 + pcolors.qualitative.Alphabet
    return [base[i % len(base)] for i in range(n)]


def _hover(df: pd.DataFrame, kind: str, meta: Sequence[str]) -> tuple[np.ndarray, str]:
    """customdata (row index first, then the hover fields) and the hover template."""
    fields = ["singer"] + (["id"] if kind == "song" else []) + ["cluster"] + [c for c in meta if c in df]
    custom = np.column_stack([df.index.to_numpy()] + [df[f].astype(str).to_numpy() for f in fields])
    lines = ["<b>%{customdata[1]}</b>"]
    for i, f in enumerate(fields[1:], start=2):
        label = "song" if f == "id" else f.replace("_", " ")
        lines.append(f"{label}: %{{customdata[{i}]}}")
    return custom, "<br>".join(lines) + "<extra></extra>"


def map_figure(map_df: pd.DataFrame, kind: str = "song", colour_by: str = "cluster",
               metadata_columns: Sequence[str] = (), highlight: Highlight | None = None,
               height: int = 540) -> go.Figure:
    """The precomputed 2-D map of songs or singers as a WebGL scatter.

    ``map_df`` is ``Recommender.map``; only rows of ``kind`` ("song" or "singer") are drawn. Every point's
    ``customdata[0]`` is its row label in ``map_df`` (used to resolve box/lasso/click selections).
    """
    df = map_df[map_df["kind"] == kind]
    meta = [c for c in metadata_columns if c in df.columns and c not in ("singer", "cluster")]
    custom, hovertemplate = _hover(df, kind, meta)
    dim = highlight is not None and (highlight.query_singer or highlight.clip_xy or
                                     (highlight.results is not None and len(highlight.results)))
    size = 7 if kind == "song" else 11
    opacity = 0.55 if dim else 0.85
    traces: list[dict] = []
    col = df[colour_by] if colour_by in df.columns else df["cluster"]
    numeric = pd.api.types.is_numeric_dtype(col) and colour_by not in ("cluster",) and col.nunique() > 12
    if numeric:
        traces.append(dict(
            type="scattergl", x=df["x"], y=df["y"], mode="markers", name=colour_by, customdata=custom,
            hovertemplate=hovertemplate, showlegend=False, unselected=dict(marker=dict(opacity=0.25)),
            marker=dict(size=size, opacity=opacity, color=col, colorscale="Viridis",
                        colorbar=dict(title=colour_by.replace("_", " "), thickness=12))))
    else:
        labels = col.astype(str)
        cats = sorted(labels.unique(), key=_natural_key)
        palette = _palette(len(cats))
        colour_of = {c: (NOISE_COLOUR if colour_by == "cluster" and c == "-1" else palette[i])
                     for i, c in enumerate(cats)}
        if len(cats) <= 24:  # one trace per category: a clickable legend
            for c in cats:
                m = (labels == c).to_numpy()
                name = ("noise" if c == "-1" else f"cluster {c}") if colour_by == "cluster" else c
                traces.append(dict(
                    type="scattergl", x=df["x"][m], y=df["y"][m], mode="markers", name=name, customdata=custom[m],
                    hovertemplate=hovertemplate, legendgroup=c, unselected=dict(marker=dict(opacity=0.25)),
                    marker=dict(size=size, opacity=opacity, color=colour_of[c])))
        else:  # e.g. colour by singer: one trace, no legend
            traces.append(dict(
                type="scattergl", x=df["x"], y=df["y"], mode="markers", name=colour_by, customdata=custom,
                hovertemplate=hovertemplate, showlegend=False, unselected=dict(marker=dict(opacity=0.25)),
                marker=dict(size=size, opacity=opacity, color=[colour_of[c] for c in labels])))
    if highlight is not None:
        _add_highlight(traces, df, kind, highlight, custom, hovertemplate)
    # plain dicts validated once by go.Figure: ~5x faster than add_trace/update_layout (175 -> 35 ms)
    layout = dict(
        height=height, margin=dict(l=4, r=4, t=30, b=4), paper_bgcolor="white", plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="top", y=-0.01, xanchor="left", x=0, font=dict(size=11),
                    itemsizing="constant", title=dict(text="")),
        hoverlabel=dict(font_size=12), uirevision=f"{kind}",
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
    )
    return go.Figure(dict(data=traces, layout=layout))


def _add_highlight(traces: list, df: pd.DataFrame, kind: str, h: Highlight, custom: np.ndarray,
                   hovertemplate: str) -> None:
    pos = {lab: i for i, lab in enumerate(df.index)}
    res = h.results if h.results is not None else pd.DataFrame(columns=["rank", "singer"])
    if kind == "song":
        # every song of a result singer: a thin ring; its best-matching song: a labelled ring
        ring = df["singer"].isin(set(res["singer"])).to_numpy()
        if ring.any():
            traces.append(dict(
                type="scattergl", x=df["x"][ring], y=df["y"][ring], mode="markers", name="result singers' songs",
                customdata=custom[ring], hovertemplate=hovertemplate, showlegend=False,
                marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(width=1, color="rgba(31,31,31,0.55)"))))
        if "match_song" in res:
            ids = df["id"].astype(str)
            best = res[res["match_song"].astype(str).isin(set(ids))]
            rows = [ids[ids == str(s)].index[0] for s in best["match_song"]]
            if rows:
                sub = df.loc[rows]
                traces.append(dict(
                    type="scatter", x=sub["x"], y=sub["y"], mode="markers+text", name="results",
                    text=[str(r) for r in best["rank"]], textposition="top center",
                    textfont=dict(size=13, color=RESULT_COLOUR, family="Arial Black, sans-serif"),
                    customdata=custom[[pos[r] for r in rows]], hovertemplate=hovertemplate,
                    marker=dict(size=13, color="rgba(255,255,255,0.6)", line=dict(width=2.2, color=RESULT_COLOUR))))
        qmask = (df["singer"] == h.query_singer).to_numpy() if h.query_singer else np.zeros(len(df), bool)
        if qmask.any():
            traces.append(dict(
                type="scatter", x=df["x"][qmask], y=df["y"][qmask], mode="markers+text",
                name=f"query: {h.query_singer}", customdata=custom[qmask], hovertemplate=hovertemplate,
                text=_first_only(h.query_singer, int(qmask.sum())), textposition="bottom center",
                textfont=dict(size=13, color=QUERY_COLOUR, family="Arial Black, sans-serif"),
                marker=dict(symbol="star", size=18, color=QUERY_FILL, line=dict(width=1.2, color=QUERY_COLOUR))))
    else:
        if len(res):
            rows = df.index[df["singer"].isin(set(res["singer"]))]
            sub = df.loc[rows]
            rank_of = dict(zip(res["singer"], res["rank"]))
            traces.append(dict(
                type="scatter", x=sub["x"], y=sub["y"], mode="markers+text", name="results",
                text=[str(rank_of[s]) for s in sub["singer"]], textposition="top center",
                textfont=dict(size=13, color=RESULT_COLOUR, family="Arial Black, sans-serif"),
                customdata=custom[[pos[r] for r in rows]], hovertemplate=hovertemplate,
                marker=dict(size=15, color="rgba(255,255,255,0.6)", line=dict(width=2.2, color=RESULT_COLOUR))))
        if h.query_singer:
            q = (df["singer"] == h.query_singer).to_numpy()
            if q.any():
                traces.append(dict(
                    type="scatter", x=df["x"][q], y=df["y"][q], mode="markers+text", name=f"query: {h.query_singer}",
                    customdata=custom[q], hovertemplate=hovertemplate, text=_first_only(h.query_singer, int(q.sum())),
                    textposition="bottom center",
                    textfont=dict(size=13, color=QUERY_COLOUR, family="Arial Black, sans-serif"),
                    marker=dict(symbol="star", size=21, color=QUERY_FILL, line=dict(width=1.2, color=QUERY_COLOUR))))
    if h.clip_xy is not None and np.all(np.isfinite(h.clip_xy)):
        traces.append(dict(
            type="scatter", x=[h.clip_xy[0]], y=[h.clip_xy[1]], mode="markers+text", name=h.clip_label,
            text=[h.clip_label], textposition="bottom center", textfont=dict(size=12, color=QUERY_COLOUR),
            hovertemplate=f"<b>{h.clip_label}</b><extra></extra>",
            marker=dict(symbol="star", size=21, color=QUERY_FILL, line=dict(width=1.2, color=QUERY_COLOUR))))


def _first_only(label: str, n: int) -> list[str]:
    """A text array that labels only the first point (one name per group of query points)."""
    return [label] + [""] * (n - 1)


def selected_rows(map_df: pd.DataFrame, points: Sequence[Mapping]) -> pd.DataFrame:
    """Rows of ``map_df`` for the points of a Plotly selection event (deduplicated, in selection order)."""
    labels = []
    for p in points or ():
        cd = p.get("customdata")
        if cd is None or len(cd) == 0:
            continue
        try:
            lab = int(float(cd[0]))
        except (TypeError, ValueError):
            continue
        if lab in map_df.index and lab not in labels:
            labels.append(lab)
    return map_df.loc[labels]


def cluster_figure(clusters: pd.DataFrame, chosen=None, height: int = 260) -> go.Figure:
    """Bar chart of cluster sizes (songs), the chosen cluster highlighted."""
    c = clusters.sort_values("cluster")
    colours = ["#e45756" if chosen is not None and str(v) == str(chosen) else "#4c78a8" for v in c["cluster"]]
    fig = go.Figure(go.Bar(
        x=c["cluster"].astype(str), y=c["n_songs"], marker_color=colours,
        customdata=np.column_stack([c["n_singers"]]),
        hovertemplate="cluster %{x}<br>%{y} songs<br>%{customdata[0]} singers<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=8, b=4), template="plotly_white",
                      xaxis=dict(title="cluster", type="category"), yaxis=dict(title="songs"), bargap=0.25)
    return fig


def _natural_key(s: str):
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)
