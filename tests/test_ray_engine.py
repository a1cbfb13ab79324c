"""``--engine ray`` (index/ray_engine.py) gives the in-process engine's index: bit-identical song vectors, the same
failures.csv and top-10, also when killed mid-way and restarted.

Ray runs in a subprocess with a time limit (a hang fails instead of stalling the suite) on a private local
instance (``address="local"``, 1 actor, 2 CPUs); the test records the PIDs of every process that subprocess starts
and stops those that outlive it (by PID, never by name).
"""
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
from index.build import build_catalogue_index, embed_files
from index.store import current_snapshot, current_snapshot_id
from index.faiss_index import load_index, search
from recsys.rank import Recommender

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT = 120  # seconds for one Ray build (about 10 s here)
CHUNK = 1  # songs per chunk: a dozen chunks, so that a run can be killed between two of them


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process under ``pid`` (from /proc; the start time tells a reused PID)."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        start[int(entry.name)] = fields[19]
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add((child, start[child]))
            todo.append(child)
    return found


def _alive(proc: tuple[int, str]) -> bool:
    try:
        stat = Path(f"/proc/{proc[0]}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] == proc[1] and fields[0] != "Z"


def _stop(procs: set) -> list[int]:
    """SIGTERM, then SIGKILL, the recorded processes still alive; returns the PIDs that had to be stopped."""
    left = [p for p in procs if _alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p[0], sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)
    return [p[0] for p in left]


def _ray_build(manifest, out, checkpoints, tmp_path, *, kill_when=None) -> tuple[subprocess.CompletedProcess, set]:
    """Run ``singrec index --engine ray`` in a subprocess; with ``kill_when`` (a predicate), SIGKILL it as soon as
    the predicate holds. Returns (the process, the processes it started)."""
    cmd = [sys.executable, "-m", "app.cli", "index", str(manifest), "--out", str(out), "--checkpoints",
           str(checkpoints), "--chunk-size", str(CHUNK), "--engine", "ray", "--address", "local", "--actors", "1"]
    log = tmp_path / f"ray-{time.monotonic_ns()}.log"
    env = {**os.environ, "SINGREC_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    started: set = set()
    killed = False
    try:
        deadline = time.monotonic() + TIME_LIMIT
        while proc.poll() is None:
            started |= _descendants(proc.pid)
            if kill_when is not None and kill_when():
                started |= _descendants(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            assert time.monotonic() < deadline, f"the Ray build hung:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _stop(started)  # what a killed (or failed) run leaves behind
    if not killed:
        assert proc.returncode == 0, log.read_text()[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, log.read_text()), started


def _top10(index_dir: Path) -> dict:
    """Every song's 10 nearest songs by each encoder, and every singer's similar singers."""
    out, snap = {}, current_snapshot(index_dir)
    for kind in ("timbre", "melody"):
        vectors = np.load(snap / "embeddings" / f"songs_{kind}.npy")
        out[kind] = search(load_index(snap / f"{kind}_songs.faiss"), vectors, 10)[1]
    rec = Recommender.load(index_dir)
    out["singers"] = [rec.similar_singers(s, k=10)["singer"].tolist() for s in rec.singers["singer"]]
    return out


@pytest.fixture(scope="module")
def catalogue_with_a_corrupt_file(tiny_catalogue, tmp_path_factory):
    dst = tmp_path_factory.mktemp("ray_cat") / "cat"
    shutil.copytree(Path(tiny_catalogue).parent, dst)
    manifest = dst / "manifest.csv"
    (dst / pd.read_csv(manifest).path[3]).write_bytes(b"fLaC but not really" * 20)
    return manifest


def test_ray_engine_killed_and_restarted_equals_in_process(catalogue_with_a_corrupt_file, tiny_checkpoints,
                                                           tmp_path):
    manifest = catalogue_with_a_corrupt_file
    ref = tmp_path / "in-process"
    build_catalogue_index(manifest, ref, checkpoints=tiny_checkpoints, chunk_size=CHUNK, progress=False)

    out = tmp_path / "ray"
    rows = out / "build" / "ray"
    first, started = _ray_build(manifest, out, tiny_checkpoints, tmp_path,
                                kill_when=lambda: rows.is_dir() and any(rows.glob("*.parquet")))
    assert first.returncode == -signal.SIGKILL, "the Ray build ended before it could be killed"
    assert started, "no Ray process was seen"
    assert current_snapshot_id(out) is None  # nothing published by the killed build

    second, started = _ray_build(manifest, out, tiny_checkpoints, tmp_path)
    assert "resumed" in second.stdout and " 0 resumed" not in second.stdout, second.stdout
    assert not [p for p in started if _alive(p)], "Ray processes outlived ray.shutdown()"

    ref_snap, out_snap = current_snapshot(ref), current_snapshot(out)
    for kind in ("timbre", "melody"):
        a, b = (np.load(d / "embeddings" / f"songs_{kind}.npy") for d in (ref_snap, out_snap))
        assert a.shape == (11, a.shape[1]) and np.array_equal(a, b), kind  # bit-identical
    assert (ref_snap / "failures.csv").read_text() == (out_snap / "failures.csv").read_text()
    assert "cannot decode" in (out_snap / "failures.csv").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(ref_snap / "songs.parquet"),
                                  pd.read_parquet(out_snap / "songs.parquet"))
    a, b = _top10(ref), _top10(out)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    # nothing new: no chunk to embed, so no Ray is started
    import ray
    report = build_catalogue_index(manifest, out, checkpoints=tiny_checkpoints, chunk_size=CHUNK, progress=False,
                                   engine="ray", append=True)
    assert report.n_embedded == 0 and report.n_reused == 11 and not ray.is_initialized()


def test_torn_parts_are_set_aside_and_their_songs_embedded_again(tiny_catalogue, tiny_encoders, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from index.ray_engine import embed_chunk_rows, read_rows

    from data.catalogue import Catalogue

    songs = Catalogue.open(tiny_catalogue).songs
    paths = songs.path[:2].tolist()
    rows_dir = tmp_path / "ray"
    rows_dir.mkdir()
    good = embed_chunk_rows(0, songs.song_id[:2].tolist(), paths, tiny_encoders, embed_files)
    pq.write_table(pa.Table.from_pandas(good), rows_dir / "a.parquet")
    pq.write_table(pa.Table.from_pandas(good), rows_dir / "b.parquet")
    data = (rows_dir / "b.parquet").read_bytes()
    (rows_dir / "b.parquet").write_bytes(data[: len(data) // 2])  # killed mid-write
    rows = read_rows(rows_dir, tmp_path / "torn")
    assert rows["song_id"].tolist() == songs.song_id[:2].tolist() and rows["error"].isna().all()
    assert (tmp_path / "torn" / "b.parquet").is_file() and not (rows_dir / "b.parquet").exists()


def test_bad_files_become_error_rows(tiny_catalogue, tiny_encoders, tmp_path):
    from index.ray_engine import embed_chunk_rows

    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"garbage")
    good = str(Path(tiny_catalogue).parent / pd.read_csv(tiny_catalogue).path[0])
    rows = embed_chunk_rows(7, ["s1", "s2"], [str(bad), good], tiny_encoders, embed_files)
    assert rows["position"].tolist() == [1, 0] and rows["chunk"].eq(7).all()
    assert rows["error"].isna().tolist() == [True, False] and "cannot decode" in rows["error"][1]


def test_without_ray_the_engine_says_how_to_install_it(tiny_catalogue, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SingrecError, match=r"pip install singrec\[ray\]"):
        build_catalogue_index(tiny_catalogue, tmp_path / "idx", engine="ray", progress=False)
    result = CliRunner().invoke(app, ["index", str(tiny_catalogue), "--out", str(tmp_path / "idx"),
                                      "--engine", "ray"])
    assert result.exit_code == 2 and "pip install singrec[ray]" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(SingrecError, match="unknown engine"):
        build_catalogue_index(tiny_catalogue, tmp_path / "idx", engine="spark", progress=False)
