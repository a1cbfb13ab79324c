import numpy as np
import pandas as pd
import pytest

from data.audio import save_audio
from data.catalogue import Catalogue, song_id_for
from data.errors import SingrecError

Y = (0.3 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)


def make_folder(root, layout):
    for rel in layout:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix in (".wav", ".flac"):
            save_audio(p, Y)
        else:
            p.write_text("x")
    return root


def test_folder_catalogue_and_stable_ids(tmp_path):
    make_folder(tmp_path, ["bob/b1.wav", "ann/a2.flac", "ann/a1.wav", "README.txt"])
    cat = Catalogue.open(tmp_path)
    assert list(cat.songs["song_id"]) == ["ann/a1", "ann/a2", "bob/b1"]
    assert cat.singers == ["ann", "bob"] and len(cat) == 3
    assert all(p.startswith(str(tmp_path.resolve())) for p in cat.songs["path"])
    assert Catalogue.open(tmp_path).fingerprint() == cat.fingerprint()
    assert song_id_for("a/b/c.mp3") == "a/b/c"


def test_folder_problems_are_all_listed(tmp_path):
    make_folder(tmp_path, ["ann/a1.wav", "ann/a1.flac", "ann/notes.txt", "loose.wav", "bob/live/x.wav"])
    with pytest.raises(SingrecError) as err:
        Catalogue.open(tmp_path)
    msg = str(err.value)
    assert "4 problem(s)" in msg
    for needle in ["ann/a1: duplicate", "ann/notes.txt: unsupported extension", "loose.wav: expected",
                   "bob/live/x.wav: expected"]:
        assert needle in msg


def test_manifest_keeps_metadata_and_resolves_relative_paths(tmp_path):
    make_folder(tmp_path, ["audio/ann/1.wav", "audio/bob/1.wav"])
    pd.DataFrame({"path": ["audio/ann/1.wav", str(tmp_path / "audio/bob/1.wav")], "singer": ["Ann", "Bob"],
                  "gender": ["f", "m"], "genre": ["jazz", "folk"]}).to_csv(tmp_path / "m.csv", index=False)
    cat = Catalogue.open(tmp_path / "m.csv")
    assert cat.metadata_columns == ["gender", "genre"]
    assert list(cat.songs["song_id"]) == ["audio/ann/1", "audio/bob/1"]
    assert cat.singer_table().set_index("singer").loc["Bob", "gender"] == "m"
    pq = tmp_path / "m.parquet"
    pd.read_csv(tmp_path / "m.csv").to_parquet(pq)
    pd.testing.assert_frame_equal(Catalogue.open(pq).songs, cat.songs)


def test_manifest_problems_are_all_listed(tmp_path):
    make_folder(tmp_path, ["a.wav"])
    pd.DataFrame({"path": ["a.wav", "missing.wav", "a.wav", "b.txt", ""], "singer": ["x", "y", "z", "w", " "]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(SingrecError) as err:
        Catalogue.open(tmp_path / "m.csv")
    msg = str(err.value)
    assert "missing.wav: file not found" in msg and "a: duplicate" in msg
    assert "b.txt: unsupported extension" in msg and "empty path" in msg and "empty singer name" in msg


def test_manifest_missing_columns_and_bad_types(tmp_path):
    (tmp_path / "m.csv").write_text("file,artist\na.wav,x\n")
    with pytest.raises(SingrecError, match="required column"):
        Catalogue.open(tmp_path / "m.csv")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(SingrecError, match="unsupported manifest type"):
        Catalogue.open(tmp_path / "m.json")
    with pytest.raises(SingrecError, match="not found"):
        Catalogue.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SingrecError, match="no audio files"):
        Catalogue.open(tmp_path / "empty")
