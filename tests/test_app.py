"""The Streamlit page (app/streamlit_app.py) run headless with streamlit's AppTest, plus its plain helpers.

AppTest drives the real page script on the shared ``tiny_index``: default view, choosing a singer (results
must equal ``Recommender.similar_singers`` for the same arguments), uploading a clip through the real
``st.file_uploader`` widget (AppTest supports ``file_uploader.set_value`` in this streamlit), and bad uploads
(too large, not audio, unreadable: a message, and the page keeps answering).
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from app import explorer, serve
from data.errors import SingrecError
from recsys.rank import TIMBRE_WEIGHT, Audio, Recommender

PAGE = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT = 180  # the first audio query loads the encoders (torch); the machine is shared


@pytest.fixture(scope="module")
def rec(tiny_index):
    return Recommender.load(tiny_index)


@pytest.fixture
def page(tiny_index, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(explorer.ENV_VAR, str(tiny_index))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _results(at) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "timbre_score" in d.value.columns]
    assert len(tables) == 1, f"expected one results table, found {len(tables)}"
    return tables[0]


def _titles(at) -> list[str]:
    return [s.value for s in at.subheader]


def _wav_bytes(seconds: float, sr: int = 16000, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ the page


def test_default_view_shows_map_and_first_singer_query(page, rec):
    first = rec.singers["singer"].iloc[0]
    assert page.selectbox(key="singer").value == first
    assert f"Singers who sound like {first}" in _titles(page)
    assert page.get("plotly_chart"), "the map is missing"
    assert page.slider(key="timbre_weight").value == TIMBRE_WEIGHT
    assert [s.key for s in page.sidebar.slider] == ["timbre_weight", "k", "diversity"]
    expected = rec.similar_singers(first, k=10, timbre_weight=TIMBRE_WEIGHT, filters=None, diversity=0.0)
    pd.testing.assert_frame_equal(_results(page).reset_index(drop=True), expected.reset_index(drop=True))
    assert not page.error
    assert page.download_button(key="download").label.startswith("Download results")
    # the best-matching song pair of the top result, with a player for each song
    assert len(page.get("audio")) == 2
    top = expected.iloc[0]
    text = " ".join(m.value for m in page.markdown)
    assert str(top["query_song"]) in text and str(top["match_song"]) in text
    # why: the top result's total and the two scores it is made of
    why = (f"total {top['score']:.3f} from timbre {top['timbre_score']:.3f} and melody {top['melody_score']:.3f} "
           f"(timbre weight {TIMBRE_WEIGHT:.2f})")
    assert why in [c.value for c in page.caption]


def test_clusters_tab_lists_the_singers_of_a_cluster(page, rec):
    assert not [s for s in page.selectbox if s.key == "cluster"]  # lazy tab: not computed until opened
    page.session_state["section"] = "Clusters"
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    cl = rec.clusters()
    box = page.selectbox(key="cluster")
    first = rec.singers["singer"].iloc[0]
    singer_cluster = rec.map[(rec.map["kind"] == "singer") & (rec.map["id"] == first)]["cluster"].iloc[0]
    assert box.value == singer_cluster  # default: the query singer's cluster
    for c in cl["cluster"]:
        page.selectbox(key="cluster").select(c)
        page.run()
        names = cl[cl["cluster"] == c]["singers"].iloc[0].split(", ")
        table = [d.value for d in page.dataframe if "n_songs" in d.value.columns and "timbre_score" not in d.value]
        assert sorted(table[0]["singer"]) == sorted(names)


def test_choosing_a_singer_matches_the_recommender(page, rec):
    other = rec.singers["singer"].iloc[2]
    page.selectbox(key="singer").select(other)
    page.slider(key="timbre_weight").set_value(0.45)
    page.slider(key="k").set_value(5)
    col, values = next(iter(explorer.filter_options(rec.singers, rec.metadata_columns).items()))
    page.multiselect(key=f"filter_{col}").select(values[0])
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert f"Singers who sound like {other}" in _titles(page)
    expected = rec.similar_singers(other, k=5, timbre_weight=0.45, filters={col: [values[0]]}, diversity=0.0)
    got = _results(page)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    assert set(got[col]) <= {values[0]}


def test_singers_map_and_colour_options_render(page, rec):
    page.segmented_control(key="map_kind").set_value("Singers")
    for colour in page.selectbox(key="colour_by").options:
        page.selectbox(key="colour_by").select(colour)
        page.run()
        assert not page.exception, (colour, [e.value for e in page.exception])


def test_upload_returns_results_and_places_the_clip(page, rec):
    path, singer = rec.songs.loc[0, ["path", "singer"]]
    data = Path(path).read_bytes()
    page.segmented_control(key="mode").set_value("Clip").run()
    assert not page.exception
    assert page.file_uploader(key="clip").allowed_type  # the browser offers wav/flac/ogg/mp3 and audio/* files
    page.file_uploader(key="clip").set_value((Path(path).name, data, "audio/flac")).run()
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    assert f"Singers who sound like {Path(path).name}" in _titles(page)
    got = _results(page)
    y = explorer.decode_upload(Path(path).name, data)
    expected = rec.similar_singers(Audio(y, label=Path(path).name), k=10, timbre_weight=TIMBRE_WEIGHT)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_exact=False, atol=1e-5)
    assert set(got["query_song"]) == {Path(path).name}


@pytest.mark.parametrize("name, data, reason", [
    ("bad.wav", b"this is not audio" * 10, "cannot decode audio"),
    ("short.wav", _wav_bytes(0.2), "too short"),
    ("empty.wav", b"", "empty"),
])
def test_bad_upload_shows_an_error_not_a_traceback(page, name, data, reason):
    page.segmented_control(key="mode").set_value("Clip").run()
    page.file_uploader(key="clip").set_value((name, data, "audio/wav")).run()
    assert not page.exception, [e.value for e in page.exception]
    errors = [e.value for e in page.error]
    assert errors and name in errors[0] and reason in errors[0], errors
    assert "/tmp" not in errors[0] and "singrec-upload" not in errors[0]  # names the upload, not the temp copy
    assert not [d for d in page.dataframe if "timbre_score" in d.value.columns]


def test_the_page_follows_a_newly_published_snapshot(tiny_index, tiny_catalogue, tiny_encoders, tmp_path,
                                                    monkeypatch):
    """A build publishing a new snapshot is picked up at the next rerun, without restarting the page."""
    from streamlit.testing.v1 import AppTest

    from index.build import build_catalogue_index

    idx = tmp_path / "idx"
    shutil.copytree(tiny_index, idx)
    monkeypatch.setenv(explorer.ENV_VAR, str(idx))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    first = Recommender.load(idx).snapshot
    assert any(f"(snapshot {first})" in c.value for c in at.caption), [c.value for c in at.caption]
    report = build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, append=True, progress=False)
    assert report.snapshot != first
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"(snapshot {report.snapshot})" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any(report.snapshot in t.value for t in at.toast)


def test_missing_index_shows_an_error(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(explorer.ENV_VAR, str(tmp_path / "nope"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.error and "Cannot open the index" in at.error[0].value


# ------------------------------------------------------------------------------------------ helpers


def test_resolve_index_dir_order(tmp_path, monkeypatch):
    script = "app/streamlit_app.py"
    env = {explorer.ENV_VAR: str(tmp_path / "env")}
    assert explorer.resolve_index_dir(["/x/app/streamlit_app.py", str(tmp_path / "arg")], env, script) \
        == tmp_path / "arg"
    assert explorer.resolve_index_dir(["/usr/bin/pytest", "tests/"], env, script) == tmp_path / "env"
    monkeypatch.chdir(tmp_path)  # DEFAULT_INDEX is relative: no demo index here ...
    assert explorer.resolve_index_dir(["/usr/bin/pytest"], {}, script) is None
    (tmp_path / explorer.DEFAULT_INDEX).mkdir(parents=True)
    (tmp_path / explorer.DEFAULT_INDEX / "CURRENT").write_text("000001\n")  # ... and now there is one
    assert explorer.resolve_index_dir(["/usr/bin/pytest"], {}, script) == explorer.DEFAULT_INDEX


def test_decode_upload_size_limit_and_success():
    with pytest.raises(SingrecError, match="too large"):
        explorer.decode_upload("big.wav", b"0" * (2 * 2 ** 20), max_mb=1)
    with pytest.raises(SingrecError, match="unsupported audio type"):  # the widget itself also refuses these
        explorer.decode_upload("notes.txt", b"hello")
    y = explorer.decode_upload("ok.wav", _wav_bytes(1.0))
    assert y.dtype == np.float32 and y.shape == (16000,)


def test_map_figure_and_selection(rec):
    res = rec.similar_singers(rec.singers["singer"].iloc[0], k=2)
    h = explorer.Highlight(query_singer=rec.singers["singer"].iloc[0], results=res, clip_xy=(0.0, 0.0))
    for kind in ("song", "singer"):
        fig = explorer.map_figure(rec.map, kind=kind, colour_by="singer", metadata_columns=rec.metadata_columns,
                                  highlight=h)
        names = [t.name for t in fig.data]
        assert "results" in names and any(n.startswith("query:") for n in names) and "your clip" in names
        base = fig.data[0]
        labels = [int(float(c[0])) for c in base.customdata]
        assert set(rec.map.loc[labels, "kind"]) == {kind}
        picked = explorer.selected_rows(rec.map, [{"customdata": list(base.customdata[0])},
                                                  {"customdata": list(base.customdata[0])}, {"x": 1}])
        assert list(picked.index) == [labels[0]]


def test_filters_round_trip():
    f = explorer.filters_dict({"gender": ["m", "f"], "genre": []})
    assert f == {"gender": ["m", "f"]}
    frozen = explorer.freeze_filters(f)
    assert hash(frozen) == hash(explorer.freeze_filters({"gender": ["f", "m"]}))
    assert explorer.thaw_filters(frozen) == {"gender": ["f", "m"]}
    assert explorer.thaw_filters(explorer.freeze_filters(None)) is None


def test_serve_command_and_bad_index(tmp_path, tiny_index):
    cmd = serve.command(tiny_index, port=8765)
    assert cmd[-2:] == ["--", str(tiny_index)] and "8765" in cmd and str(serve.PAGE) in cmd
    with pytest.raises(SingrecError, match="not a singrec index: CURRENT is missing"):
        serve.serve(tmp_path)


def test_python_dash_m_app_reports_a_bad_index(tmp_path, capsys):
    from app.__main__ import main

    assert main([str(tmp_path / "missing")]) == 2
    assert "index directory not found" in capsys.readouterr().err


def test_prepare_clip_names_the_upload_when_the_encoders_refuse_it():
    class Refusing:
        def embed_clip(self, y):
            raise SingrecError("audio is too short for the timbre encoder", "/tmp/xyz/clip.wav")

    with pytest.raises(SingrecError) as err:
        explorer.prepare_clip(Refusing(), "take 3.wav", _wav_bytes(1.0))
    assert str(err.value) == "take 3.wav: audio is too short for the timbre encoder"


def test_too_large_or_not_audio_uploads_get_a_message_and_the_page_keeps_working(page, rec):
    path = rec.songs.loc[0, "path"]
    page.segmented_control(key="mode").set_value("Clip").run()
    big = b"\0" * ((explorer.MAX_UPLOAD_MB + 1) * 2 ** 20)  # one MB over the limit (20 MB)
    # AppTest passes any size and name to the page: these are answered by the page's own checks
    for name, data, kind, reason in [
            ("long take.wav", big, "audio/wav",
             f"too large ({explorer.MAX_UPLOAD_MB + 1:.1f} MB; at most {explorer.MAX_UPLOAD_MB} MB)"),
            ("notes.txt", b"these are lyrics, not audio", "text/plain", "unsupported audio type '.txt'"),
            ("lyrics.mp3", b"these are lyrics, not audio" * 100, "audio/mpeg", "cannot decode audio")]:
        page.file_uploader(key="clip").set_value((name, data, kind)).run()
        assert not page.exception, (name, [e.value for e in page.exception])
        errors = [e.value for e in page.error]
        assert errors and errors[0].startswith(f"{name}: ") and reason in errors[0], (name, errors)
        assert not [d for d in page.dataframe if "timbre_score" in d.value.columns]
    # the page keeps working: a real clip, then a singer query
    page.file_uploader(key="clip").set_value((Path(path).name, Path(path).read_bytes(), "audio/flac")).run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    assert f"Singers who sound like {Path(path).name}" in _titles(page) and len(_results(page))
    page.segmented_control(key="mode").set_value("Singer").run()
    assert not page.exception and not page.error
    first = rec.singers["singer"].iloc[0]
    assert f"Singers who sound like {first}" in _titles(page)
    assert _results(page)["singer"].tolist() == rec.similar_singers(first, k=10)["singer"].tolist()
