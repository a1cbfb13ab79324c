"""Index snapshots (index/store.py): readers see one whole snapshot while a build publishes another, old
snapshots are kept then pruned, and a build killed at any point leaves the published snapshot intact and is
resumed by the next run.

Builds use the tiny seeded encoders of tests/conftest.py on 9 songs (3 singers x 3) of a copy of the tiny
catalogue: with fewer than 16 map points the map is a PCA, which keeps each build to about a second (UMAP's
numba compilation would cost ~20 s in every fresh process).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from index.build import build_catalogue_index
from index.store import current_snapshot, current_snapshot_id, snapshot_ids
from recsys.rank import Recommender

ROOT = Path(__file__).resolve().parents[1]
WAIT = 180  # seconds for a killed subprocess build (imports torch; the machine is shared)


def _catalogue(tiny_catalogue, folder: Path, **extra) -> tuple[Path, Path]:
    """A copy of the tiny catalogue with two manifests: ``all.csv`` (the 9 songs of 3 singers) and
    ``first.csv`` (every third of them); ``extra`` = {column: (value in first.csv, value in all.csv)}."""
    shutil.copytree(Path(tiny_catalogue).parent, folder)
    full = pd.read_csv(folder / "manifest.csv")
    full = full[full["singer"].isin(sorted(full["singer"].unique())[:3])].reset_index(drop=True)
    first = full.iloc[::3].copy()
    for col, (a, b) in extra.items():
        first[col], full[col] = a, b
    first.to_csv(folder / "first.csv", index=False)
    full.to_csv(folder / "all.csv", index=False)
    return folder / "first.csv", folder / "all.csv"


def _answers(index_dir: Path) -> dict:
    rec = Recommender.load(index_dir)
    return {s: rec.similar_singers(s, k=3) for s in rec.singers["singer"]}


def _same_answers(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for s in a:
        pd.testing.assert_frame_equal(a[s], b[s])


def test_queries_during_a_rebuild_come_wholly_from_one_snapshot(tiny_catalogue, tiny_encoders, tmp_path):
    first, full = _catalogue(tiny_catalogue, tmp_path / "cat", marker=("old", "new"))
    idx = tmp_path / "idx"
    build_catalogue_index(first, idx, encoders=tiny_encoders, progress=False)
    old_id = current_snapshot_id(idx)
    singer = Recommender.load(idx).singers["singer"].iloc[0]
    reference = {"old": Recommender.load(idx).similar_singers(singer, k=10)}

    answers, errors, stop = [], [], threading.Event()

    def query_loop():
        while not stop.is_set():
            try:
                rec = Recommender.load(idx)
                res = rec.similar_singers(singer, k=10)
                markers = set(rec.singers["marker"]) | set(res["marker"])
                answers.append((rec.snapshot, len(rec.songs), markers, res))
            except Exception as exc:  # noqa: BLE001 -- any failure of a reader is the finding
                errors.append(repr(exc))
                return

    reader = threading.Thread(target=query_loop, daemon=True)
    reader.start()
    try:
        time.sleep(0.2)
        report = build_catalogue_index(full, idx, encoders=tiny_encoders, append=True, progress=False)
        n_after = len(answers)
        deadline = time.monotonic() + 30
        while len(answers) < n_after + 3 and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not errors, errors
    assert (report.n_reused, report.n_embedded, report.snapshot) == (3, 6, "000002")
    reference["new"] = Recommender.load(idx).similar_singers(singer, k=10)
    seen = set()
    for snapshot, n_songs, markers, res in answers:
        assert len(markers) == 1, markers  # never a mix of tables
        marker = markers.pop()
        assert (snapshot, n_songs) == ({"old": (old_id, 3), "new": ("000002", 9)}[marker])
        pd.testing.assert_frame_equal(res, reference[marker])
        seen.add(marker)
    assert seen == {"old", "new"}, seen
    # the previous snapshot stays readable after publishing; a third build removes the oldest (keep 2)
    assert snapshot_ids(idx) == [old_id, "000002"]
    build_catalogue_index(full, idx, encoders=tiny_encoders, append=True, progress=False)
    assert snapshot_ids(idx) == ["000002", "000003"] and current_snapshot_id(idx) == "000003"


# One subprocess imports singrec once (~3 s of CPU), then forks a build per job; each child replaces the
# build's fault_point hook with one that SIGKILLs the child the nth time the named point is reached. The parent
# prints each child's wait status. It never runs torch itself, so forking it is safe.
KILLED_BUILDS = """
import json, os, signal, sys
import encoders.checkpoint, encoders.embed, index.build as build, index.map, recsys.rank
manifest, checkpoints, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for out, point, nth in jobs:
    pid = os.fork()
    if pid == 0:
        reached = 0
        def fault_point(name):
            global reached
            if name == point:
                reached += 1
                if reached == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
        build.fault_point = fault_point
        try:
            build.build_catalogue_index(manifest, out, checkpoints=checkpoints, append=True, chunk_size=2,
                                        progress=False)
        finally:
            os._exit(3)  # not killed
    _, status = os.waitpid(pid, 0)
    print(json.dumps([point, os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1]), flush=True)
"""

# (fault point, which time it is reached): during embedding, between the final writes of the new snapshot,
# after the snapshot folder is complete but before CURRENT names it, and after CURRENT (before cleanup)
KILL_POINTS = [("chunk", 2), ("tables", 1), ("renamed", 1), ("published", 1)]


def test_a_killed_build_leaves_the_published_snapshot_and_resumes(tiny_catalogue, tiny_checkpoints, tiny_encoders,
                                                                  tmp_path):
    import json

    first, full = _catalogue(tiny_catalogue, tmp_path / "cat")
    base, whole = tmp_path / "base", tmp_path / "uninterrupted"
    build_catalogue_index(first, base, encoders=tiny_encoders, progress=False)
    build_catalogue_index(full, whole, encoders=tiny_encoders, progress=False)
    before, after = _answers(base), _answers(whole)
    jobs = []
    for point, nth in KILL_POINTS:
        out = tmp_path / f"idx-{point}"
        shutil.copytree(base, out)
        jobs.append([str(out), point, nth])
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILDS, str(full), str(tiny_checkpoints), json.dumps(jobs)],
                          cwd=ROOT, env={**os.environ, "SINGREC_THREADS": "1"}, capture_output=True, text=True,
                          timeout=WAIT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = dict(json.loads(line) for line in proc.stdout.splitlines())
    assert killed == {point: signal.SIGKILL for point, _ in KILL_POINTS}, proc.stderr[-3000:]

    for point, _ in KILL_POINTS:
        out = tmp_path / f"idx-{point}"
        if point == "published":  # killed just after publishing: the new snapshot is the whole new index
            assert current_snapshot_id(out) == "000002"
            _same_answers(_answers(out), after)
            assert (out / "build").is_dir()  # its chunks were not removed yet
        else:  # the published snapshot is untouched and answers as before
            assert current_snapshot_id(out) == "000001", point
            _same_answers(_answers(out), before)
        report = build_catalogue_index(full, out, encoders=tiny_encoders, append=True, chunk_size=2,
                                       progress=False)
        if point in ("chunk", "tables", "renamed"):
            assert report.n_resumed >= 2 and report.n_embedded + report.n_resumed == 6, (point, report)
        _same_answers(_answers(out), after)
        for name in ("songs.parquet", "singers.parquet", "map.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(current_snapshot(out) / name),
                                          pd.read_parquet(current_snapshot(whole) / name), atol=1e-5)
        assert not (out / "build").exists() and not list((out / "snapshots").glob("*.partial")), point
        assert len(snapshot_ids(out)) == 2, (point, snapshot_ids(out))  # the current and the previous one


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_sets_how_many_snapshots_stay(tiny_index, tiny_catalogue, tiny_encoders, tmp_path, keep):
    idx = tmp_path / "idx"
    shutil.copytree(tiny_index, idx)
    for _ in range(3):  # nothing new: no embedding, each build publishes a snapshot of hard links
        build_catalogue_index(tiny_catalogue, idx, encoders=tiny_encoders, append=True, progress=False, keep=keep)
    assert snapshot_ids(idx) == [f"{i:06d}" for i in range(5 - keep, 5)]
    _same_answers(_answers(idx), _answers(tiny_index))
