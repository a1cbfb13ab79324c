import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.errors import SingrecError
from index.build import build_catalogue_index
from index.faiss_index import build_index, choose_index_key, load_index, recall_at_k, save_index, search
from index.store import FORMAT_VERSION, current_snapshot, read_info
from recsys.rank import Recommender

ROOT = Path(__file__).resolve().parents[1]


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("key", ["Flat", "HNSW32", "IVF16,Flat"])
def test_a_vector_finds_itself(key, tmp_path):
    x = unit(np.random.default_rng(0), 2000, 32)
    index = build_index(x, key)
    _, ids = search(index, x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= (1.0 if key == "Flat" else 0.9)
    save_index(index, tmp_path / "x.faiss", info={"factory": key})
    s2, ids2 = search(load_index(tmp_path / "x.faiss"), x[:50], 5)
    np.testing.assert_array_equal(ids2, search(index, x[:50], 5)[1])
    assert json.loads((tmp_path / "x.faiss.json").read_text())["factory"] == key


def test_auto_key_and_recall():
    assert choose_index_key(4500) == "Flat" and choose_index_key(1_000_000).startswith("IVF")
    rng = np.random.default_rng(1)
    centres = unit(rng, 50, 16)
    x = centres[rng.integers(0, 50, 20000)] + 0.05 * rng.standard_normal((20000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:100]
    exact = search(build_index(x, "Flat"), q, 10)[1]
    approx = search(build_index(x, "IVF64,Flat"), q, 10)[1]
    assert recall_at_k(exact, exact) == 1.0
    assert 0.5 < recall_at_k(approx, exact) <= 1.0


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(SingrecError, match="invalid FAISS index key"):
        build_index(np.ones((3, 4), np.float32), "Nonsense99")
    with pytest.raises(SingrecError, match="non-empty"):
        build_index(np.zeros((0, 4), np.float32))
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(SingrecError, match="cannot read FAISS index"):
        load_index(tmp_path / "bad.faiss")


def test_index_directory_contents(tiny_index, tiny_catalogue):
    info = read_info(tiny_index)
    assert (tiny_index / "CURRENT").read_text().strip() == info["snapshot"]
    snap = current_snapshot(tiny_index)
    assert snap == tiny_index / "snapshots" / info["snapshot"]
    assert sorted(p.name for p in tiny_index.iterdir()) == ["CURRENT", "snapshots"]
    assert info["format_version"] == FORMAT_VERSION
    assert info["counts"] == {"songs": 12, "singers": 4, "failures": 0}
    assert set(info["encoders"]) == {"timbre", "melody"} and len(info["encoders"]["timbre"]["sha256"]) == 64
    for name in ["songs.parquet", "singers.parquet", "map.parquet", "failures.csv", "timbre_songs.faiss",
                 "melody_songs.faiss", "timbre_singers.faiss", "melody_singers.faiss",
                 "embeddings/songs_timbre.npy", "embeddings/singers_melody.npy"]:
        assert (snap / name).is_file(), name
    assert not (tiny_index / "build").exists()
    assert sorted(p.name for p in (snap / "embeddings").iterdir()) == [
        f"{w}_{k}.npy" for w in ("singers", "songs") for k in ("melody", "timbre")]
    assert not {"profile", "voice", "expression"} & set(info)
    # a singer's vector is the normalised mean of its songs' vectors
    songs_singer = pd.read_parquet(snap / "songs.parquet")["singer"]
    first = sorted(songs_singer.unique())[0]
    for kind in ("timbre", "melody"):
        mean = np.load(snap / f"embeddings/songs_{kind}.npy")[(songs_singer == first).to_numpy()].mean(0)
        np.testing.assert_allclose(np.load(snap / f"embeddings/singers_{kind}.npy")[0],
                                   mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    songs = pd.read_parquet(snap / "songs.parquet")
    assert list(songs["song_id"]) == sorted(songs["song_id"]) and {"gender", "melody_id", "duration"} <= set(songs)
    m = pd.read_parquet(snap / "map.parquet")
    assert sorted(m["kind"].value_counts().to_dict().items()) == [("singer", 4), ("song", 12)]
    assert np.isfinite(m[["x", "y"]].to_numpy()).all()
    # song i of the FAISS index is row i of songs.parquet: each song vector finds its own row
    vec = np.load(snap / "embeddings/songs_timbre.npy")
    _, ids = search(load_index(snap / "timbre_songs.faiss"), vec, 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(len(songs)))


def _copy_catalogue(src_manifest, dst):
    shutil.copytree(Path(src_manifest).parent, dst)
    return dst / "manifest.csv"


def test_corrupt_and_silent_files_are_reported_and_skipped(tiny_catalogue, tiny_encoders, tmp_path):
    manifest = _copy_catalogue(tiny_catalogue, tmp_path / "cat")
    df = pd.read_csv(manifest)
    corrupt, silent = tmp_path / "cat" / df.path[0], tmp_path / "cat" / df.path[5]
    corrupt.write_bytes(b"fLaC but not really" * 20)
    import soundfile as sf
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    report = build_catalogue_index(manifest, tmp_path / "idx", encoders=tiny_encoders, progress=False)
    assert report.n_songs == 10 and len(report.failures) == 2
    fails = pd.read_csv(report.snapshot_dir / "failures.csv").set_index("path")
    assert "cannot decode" in fails.loc[str(corrupt.resolve()), "reason"]
    assert "silent" in fails.loc[str(silent.resolve()), "reason"]
    assert "2 failed" in report.summary()


def test_nothing_indexable_is_an_error(tiny_catalogue, tiny_encoders, tmp_path):
    manifest = _copy_catalogue(tiny_catalogue, tmp_path / "cat")
    for p in pd.read_csv(manifest).path:
        (tmp_path / "cat" / p).write_bytes(b"garbage")
    with pytest.raises(SingrecError, match="no song could be indexed"):
        build_catalogue_index(manifest, tmp_path / "idx", encoders=tiny_encoders, progress=False)
    assert len(pd.read_csv(tmp_path / "idx" / "build" / "failures.csv")) == 12
    assert not (tmp_path / "idx" / "CURRENT").exists()  # nothing published


def _same_index(a: Path, b: Path):
    """The published snapshots of index directories a and b hold the same index."""
    sa, sb = current_snapshot(a), current_snapshot(b)
    for name in ["songs.parquet", "singers.parquet"]:
        # absolute paths differ when the catalogue was copied; everything else must be identical
        pd.testing.assert_frame_equal(pd.read_parquet(sa / name).drop(columns="path", errors="ignore"),
                                      pd.read_parquet(sb / name).drop(columns="path", errors="ignore"))
    for kind in ["timbre", "melody"]:
        np.testing.assert_allclose(np.load(sa / f"embeddings/songs_{kind}.npy"),
                                   np.load(sb / f"embeddings/songs_{kind}.npy"), atol=1e-5)
    ra, rb = Recommender.load(a), Recommender.load(b)
    for singer in ra.singers["singer"]:
        pd.testing.assert_frame_equal(ra.similar_singers(singer, k=3), rb.similar_singers(singer, k=3),
                                      atol=1e-5)


def test_append_equals_full_rebuild(tiny_catalogue, tiny_encoders, tiny_index, tmp_path):
    manifest = _copy_catalogue(tiny_catalogue, tmp_path / "cat")
    full = pd.read_csv(manifest)
    full.iloc[::3].to_csv(manifest, index=False)  # first: a third of the catalogue
    first = build_catalogue_index(manifest, tmp_path / "idx", encoders=tiny_encoders, progress=False)
    assert first.n_songs == 4
    full.to_csv(manifest, index=False)  # the catalogue grew
    report = build_catalogue_index(manifest, tmp_path / "idx", encoders=tiny_encoders, append=True,
                                   progress=False)
    assert (report.n_reused, report.n_embedded, report.n_songs) == (4, 8, 12)
    _same_index(tmp_path / "idx", tiny_index)


def test_append_refuses_other_encoders(tiny_catalogue, tiny_index, tmp_path):
    import torch
    from dataclasses import asdict
    from data.features import DEFAULT_FEATURES
    from encoders.checkpoint import load_default_encoders, save_checkpoint
    from encoders.timbre import TimbreConfig, TimbreNet

    folder = tmp_path / "other"
    folder.mkdir()
    torch.manual_seed(123)
    save_checkpoint(folder / "timbre.pt", kind="timbre", model=TimbreNet(TimbreConfig()),
                    config=asdict(TimbreConfig()), features=DEFAULT_FEATURES)
    shutil.copy(Path(read_info(tiny_index)["encoders"]["melody"]["checkpoint_path"]), folder / "melody.pt")
    idx = tmp_path / "idx"
    shutil.copytree(tiny_index, idx)
    with pytest.raises(SingrecError, match="different timbre encoder"):
        build_catalogue_index(tiny_catalogue, idx, encoders=load_default_encoders(folder), append=True,
                              progress=False)


def test_append_with_no_new_song_reuses_the_map_and_faiss_files(tiny_catalogue, tiny_encoders, tiny_index, tmp_path,
                                                                  monkeypatch):
    import index.build

    idx = tmp_path / "idx"
    shutil.copytree(tiny_index, idx)

    def not_again(*a, **k):
        raise AssertionError("computed again")

    # nothing new: no song is embedded, and the map layout and FAISS indexes of the same vectors are kept
    for name in ("embed_files", "compute_map", "build_index"):
        monkeypatch.setattr(index.build, name, not_again)
    report = build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, append=True, progress=False)
    assert (report.n_reused, report.n_embedded) == (12, 0)
    old, new = current_snapshot(tiny_index), current_snapshot(idx)
    assert new.name > old.name  # a new snapshot, published
    pd.testing.assert_frame_equal(pd.read_parquet(new / "map.parquet"), pd.read_parquet(old / "map.parquet"))
    assert read_info(idx)["map"] == read_info(tiny_index)["map"]
    _same_index(idx, tiny_index)
    # the new snapshot shares every unchanged file with the previous one (hard links), the previous one is kept
    prev = idx / "snapshots" / old.name
    for name in ["timbre_songs.faiss", "melody_singers.faiss", "map.parquet", "embeddings/songs_timbre.npy",
                 "embeddings/songs_melody.npy", "embeddings/singers_melody.npy", "songs.parquet"]:
        assert os.path.samefile(new / name, prev / name), name


def test_a_reused_map_layout_carries_todays_metadata_and_only_for_the_same_songs(tiny_index):
    from index.map import reuse_map

    snap = current_snapshot(tiny_index)
    previous = pd.read_parquet(snap / "map.parquet")
    songs, singers = pd.read_parquet(snap / "songs.parquet"), pd.read_parquet(snap / "singers.parquet")
    pd.testing.assert_frame_equal(reuse_map(previous, songs, singers), previous)
    renamed = singers.assign(gender="x")  # metadata edited in the catalogue: the layout stays, the labels follow
    again = reuse_map(previous, songs, renamed)
    assert (again["gender"] == "x").all() and np.array_equal(again[["x", "y"]], previous[["x", "y"]])
    assert reuse_map(previous, songs.iloc[1:], singers) is None  # a song fewer: the layout must be computed


def test_kill_and_resume_equals_uninterrupted(tiny_catalogue, tiny_checkpoints, tiny_index, tmp_path):
    out = tmp_path / "idx"
    code = ("import sys; from index.build import build_catalogue_index;"
            f"build_catalogue_index({str(tiny_catalogue)!r}, {str(out)!r}, "
            f"checkpoints={str(tiny_checkpoints)!r}, chunk_size=1, progress=False)")
    log = tmp_path / "build.log"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "SINGREC_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 120
        while not (out / "build" / "part-00002.npz").exists():
            assert proc.poll() is None, f"the build ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the build made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "CURRENT").exists()
    with pytest.raises(SingrecError, match="unfinished build"):
        Recommender.load(out)
    report = build_catalogue_index(tiny_catalogue, out, checkpoints=tiny_checkpoints, chunk_size=1, progress=False)
    assert report.n_resumed >= 3 and report.n_resumed + report.n_embedded == 12
    _same_index(out, tiny_index)


@pytest.mark.parametrize("version", [FORMAT_VERSION - 1, 99])
def test_other_format_version_is_refused(tiny_catalogue, tiny_encoders, tiny_index, tmp_path, version):
    """An index of an older (or unknown) layout is not read: loading it, or appending to it, says to rebuild."""
    idx = tmp_path / "idx"
    shutil.copytree(tiny_index, idx)
    path = current_snapshot(idx) / "index.json"
    info = json.loads(path.read_text())
    info["format_version"] = version
    path.write_text(json.dumps(info))
    message = f"format version {version} is not supported .*rebuild it with `singrec index CATALOGUE --out INDEX_DIR`"
    with pytest.raises(SingrecError, match=message):
        Recommender.load(idx)
    with pytest.raises(SingrecError, match=message):
        build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, append=True, progress=False)


def test_an_index_of_the_layout_before_snapshots_says_how_to_rebuild(tiny_catalogue, tiny_encoders, tiny_index,
                                                                    tmp_path):
    """Format version 2 kept the files at the top of INDEX_DIR (no CURRENT): loading or appending says to
    rebuild; a full build publishes a snapshot and removes the old files."""
    idx = tmp_path / "idx"
    shutil.copytree(current_snapshot(tiny_index), idx)
    info = json.loads((idx / "index.json").read_text())
    (idx / "index.json").write_text(json.dumps({**info, "format_version": 2}))
    message = "format version 2 is not supported .*rebuild it with `singrec index CATALOGUE --out INDEX_DIR`"
    with pytest.raises(SingrecError, match=message):
        Recommender.load(idx)
    with pytest.raises(SingrecError, match=message):
        build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, append=True, progress=False)
    build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, progress=False)
    _same_index(idx, tiny_index)
    assert sorted(p.name for p in idx.iterdir()) == ["CURRENT", "snapshots"]  # the old files are gone
