"""Catalogue metadata never collides with computed fields (data/catalogue.py ``stored_name``).

Any metadata column name is accepted: names of computed columns (every column of songs.parquet,
singers.parquet, map.parquet and of a result row) are kept as ``meta:<name>``, values (unicode, NaN, None)
are kept intact, computed fields are never replaced, and filters take the names the catalogue gave.
The property-based test builds a real index per example with the tiny encoders on four 1-second songs.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import index.build
from app.cli import app
from data.catalogue import META_PREFIX, RESERVED_COLUMNS, stored_name
from data.errors import SingrecError
from index.build import build_catalogue_index
from index.store import current_snapshot
from recsys.rank import RESULT_COLUMNS, Recommender

NAME_CHARS = st.characters(blacklist_categories=("Cs",))  # any unicode a file can hold
REQUIRED = ("path", "singer")
# songs of the test catalogue: singer a has two, b and c one each (2 results for a query by a)
SONGS = [("a", "a/1"), ("a", "a/2"), ("b", "b/1"), ("c", "c/1")]
SINGERS = ["a", "b", "c"]


def na_equal(x, y) -> bool:
    """Equal values, counting None and NaN as the same missing value."""
    if pd.isna(x) or pd.isna(y):
        return bool(pd.isna(x) and pd.isna(y))
    return x == y


@given(st.lists(st.one_of(st.text(NAME_CHARS, max_size=12), st.sampled_from(RESERVED_COLUMNS),
                          st.just(META_PREFIX).map(lambda p: p + "rank")), max_size=20))
@settings(max_examples=300, deadline=None)
def test_stored_names_are_distinct_and_never_computed(names):
    names = list(dict.fromkeys(names))
    stored = [stored_name(n) for n in names]
    assert len(set(stored)) == len(stored)  # one-to-one
    assert not set(stored) & set(RESERVED_COLUMNS)
    for n, s in zip(names, stored):
        assert s == n or s == META_PREFIX + n
        assert (s != n) == (n in RESERVED_COLUMNS or n.startswith(META_PREFIX))


def test_reserved_columns_cover_every_computed_column(tiny_index):
    """RESERVED_COLUMNS (data/) lists every column the index and the ranking compute (index/, recsys/)."""
    rec = Recommender.load(tiny_index)
    user = set(rec.info["metadata"].values())
    computed = (set(rec.songs.columns) | set(rec.singers.columns) | set(rec.map.columns)
                | set(rec.similar_singers(rec.singers["singer"].iloc[0], k=2).columns)) - user
    assert computed <= set(RESERVED_COLUMNS), computed - set(RESERVED_COLUMNS)
    assert set(RESULT_COLUMNS) <= set(RESERVED_COLUMNS)
    from index.attributes import ATTRIBUTE_COLUMNS
    assert set(ATTRIBUTE_COLUMNS) <= set(RESERVED_COLUMNS)
    assert not any(c.startswith(META_PREFIX) for c in RESERVED_COLUMNS)


@pytest.fixture(scope="module")
def short_songs(tiny_catalogue, tmp_path_factory):
    """A folder with four 1-second songs (SONGS), cut from the tiny catalogue; manifests are written beside."""
    folder = tmp_path_factory.mktemp("short_songs")
    sources = pd.read_csv(tiny_catalogue)
    for i, (singer, song) in enumerate(SONGS):
        src = Path(tiny_catalogue).parent / sources["path"].iloc[3 * SINGERS.index(singer) + i % 2]
        y, sr = sf.read(src, dtype="float32")
        (folder / singer).mkdir(exist_ok=True)
        sf.write(folder / f"{song}.wav", y[:sr], sr)
    return folder


@st.composite
def metadata(draw):
    """{column name: (values of the four songs, constant within each singer)}: every computed column name,
    some other names, text (any unicode, None) or float (NaN) values."""
    extra = draw(st.lists(st.one_of(st.text(NAME_CHARS, max_size=10),
                                    st.sampled_from(["meta:rank", "meta:", "1", "2.5", " kind", "Rank", "nan", ""])),
                          max_size=4))
    names = list(dict.fromkeys([c for c in RESERVED_COLUMNS if c not in REQUIRED] + extra))
    names = [n for n in names if n not in REQUIRED]
    text = st.one_of(st.none(), st.text(NAME_CHARS, max_size=6))
    number = st.one_of(st.just(math.nan), st.floats(allow_nan=False, allow_infinity=False, width=32))
    columns = {}
    for name in names:
        value = text if draw(st.booleans()) else number
        if draw(st.booleans()):  # one value per singer: a singer column (filters, map colours, results)
            per_singer = draw(st.lists(value, min_size=3, max_size=3))
            columns[name] = ([per_singer[SINGERS.index(s)] for s, _ in SONGS], True)
        else:
            values = draw(st.lists(value, min_size=4, max_size=4))
            columns[name] = (values, na_equal(values[0], values[1]))  # b and c have one song each
    return columns


@given(columns=metadata())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_metadata_builds_an_index_with_computed_fields_intact(columns, short_songs, tiny_encoders,
                                                                   tmp_path_factory):
    work = tmp_path_factory.mktemp("meta")
    manifest = short_songs / f"{work.name}.parquet"
    table = pd.DataFrame({"path": [f"{song}.wav" for _, song in SONGS], "singer": [s for s, _ in SONGS]})
    for name, (values, _) in columns.items():
        table[name] = pd.Series(values, dtype=object if any(isinstance(v, str) for v in values) else None)
    table.to_parquet(manifest, index=False)

    calls = []
    original = index.build.embed_files
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index.build, "embed_files", lambda *a, **k: calls.append(1) or original(*a, **k))
        try:
            report = build_catalogue_index(manifest, work / "idx", encoders=tiny_encoders, progress=False)
        except SingrecError as exc:  # allowed, but only before anything is embedded, with one message
            assert not calls and str(exc)
            return
    renamed = {n: META_PREFIX + n for n in columns if n in RESERVED_COLUMNS or n.startswith(META_PREFIX)}
    assert report.renamed == renamed
    assert report.summary().count("kept under another name") == (1 if renamed else 0)

    rec = Recommender.load(work / "idx")
    snap = current_snapshot(work / "idx")
    songs = pd.read_parquet(snap / "songs.parquet")
    # computed song fields
    assert list(songs.columns[:5]) == ["song_id", "path", "rel_path", "singer", "duration"]
    assert list(songs["song_id"]) == [song for _, song in SONGS]
    assert list(songs["singer"]) == [s for s, _ in SONGS]
    assert np.allclose(songs["duration"], 1.0)
    assert list(rec.singers["singer"]) == SINGERS and list(rec.singers["n_songs"]) == [2, 1, 1]
    m = rec.map
    assert list(m["kind"]) == ["song"] * 4 + ["singer"] * 3
    assert list(m["id"]) == list(songs["song_id"]) + SINGERS
    assert np.isfinite(m[["x", "y"]].to_numpy(float)).all() and pd.api.types.is_integer_dtype(m["cluster"])

    res = rec.similar_singers("a", k=5, timbre_weight=0.5)
    assert list(res.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert list(res["rank"]) == [1, 2] and set(res["singer"]) == {"b", "c"}
    assert np.allclose(res["score"], 0.5 * res["timbre_score"] + 0.5 * res["melody_score"], atol=1e-6)
    assert np.all(np.abs(res[["score", "timbre_score", "melody_score"]].to_numpy(float)) <= 1 + 1e-5)
    assert set(res["query_song"]) <= {"a/1", "a/2"}
    assert list(res["match_song"]) == [f"{s}/1" for s in res["singer"]]

    # the user's values, under their names
    for name, (values, per_singer) in columns.items():
        col = stored_name(name)
        assert all(na_equal(x, y) for x, y in zip(songs[col], values)), (name, list(songs[col]), values)
        if not per_singer:
            continue
        value_of = {s: values[[x for x, _ in SONGS].index(s)] for s in SINGERS}
        assert col in rec.singers.columns and col in m.columns, name
        assert all(na_equal(v, value_of[s]) for s, v in zip(res["singer"], res[col])), name
        assert all(na_equal(v, value_of[s]) for s, v in zip(m["singer"], m[col])), name
        # a filter addresses the column by the name given
        want = value_of["b"]
        if not pd.isna(want):
            hit = rec.similar_singers("a", k=5, filters={name: want})
            # a filter matches equal values, or values that print alike (-0.0 and 0.0 are equal)
            assert "b" in set(hit["singer"]) and all(v == want or str(v) == str(want) for v in hit[col]), name
    shutil.rmtree(work, ignore_errors=True)
    manifest.unlink()


def test_the_reported_catalogue_through_the_cli(short_songs, tiny_checkpoints, tmp_path):
    """The columns found by a user (duration, kind, score, rank, id, x, cluster, song_id) in a CSV manifest:
    the index builds, the summary names the kept columns once, queries return computed fields, and
    ``--where rank=3`` filters on the catalogue's own ``rank``."""
    manifest = short_songs / "reported.csv"
    pd.DataFrame({"path": [f"{song}.wav" for _, song in SONGS], "singer": [s for s, _ in SONGS],
                  "duration": ["long", "long", "short", "short"], "kind": ["solo", "solo", "duo", "duo"],
                  "score": [0.5] * 4, "rank": [3, 3, 3, 7], "id": ["x1", "x1", "x2", "x3"], "x": [9, 9, 9, 9],
                  "cluster": ["pop", "pop", "rock", "jazz"], "song_id": ["s1", "s2", "s3", "s4"]}
                 ).to_csv(manifest, index=False)
    out = tmp_path / "idx"
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--checkpoints", str(tiny_checkpoints)])
    assert res.exit_code == 0, res.output
    assert res.output.count("kept under another name") == 1
    for name in ["duration", "kind", "score", "rank", "id", "x", "cluster", "song_id"]:
        assert f"'{name}' as 'meta:{name}'" in res.output
    res = runner.invoke(app, ["similar", str(out), "--singer", "a", "--where", "rank=3", "--json"])
    assert res.exit_code == 0, res.output
    import json
    rows = json.loads(res.stdout)
    assert [r["singer"] for r in rows] == ["b"] and rows[0]["rank"] == 1 and rows[0]["meta:rank"] == 3
    assert rows[0]["score"] != 0.5 and rows[0]["meta:score"] == 0.5 and rows[0]["meta:kind"] == "duo"
    res = runner.invoke(app, ["similar", str(out), "--singer", "a", "--where", "meta:rank=3"])
    assert res.exit_code == 0, res.output  # the stored name works too
    res = runner.invoke(app, ["similar", str(out), "--singer", "a", "--where", "nope=1"])
    assert res.exit_code == 2 and "cannot filter on 'nope'" in res.output
    manifest.unlink()


def test_metadata_that_cannot_be_stored_fails_before_embedding(short_songs, tiny_encoders, tmp_path, monkeypatch):
    manifest = tmp_path / "m.parquet"
    table = pd.DataFrame({"path": [str(short_songs / f"{song}.wav") for _, song in SONGS],
                          "singer": [s for s, _ in SONGS]})
    table["tags"] = [[1], [1, 2], [], [3]]  # a list column: Parquet holds it, the singer table cannot
    table.to_parquet(manifest, index=False)
    monkeypatch.setattr(index.build, "embed_files", lambda *a, **k: pytest.fail("embedded"))
    with pytest.raises(SingrecError, match="metadata cannot be stored in the index .*nothing was embedded"):
        build_catalogue_index(manifest, tmp_path / "idx", encoders=tiny_encoders, progress=False)
