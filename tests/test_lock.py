"""One writer per index directory (index/lock.py): a second build fails at once naming the first, a killed
build's lock is taken over, and of several processes taking a stale lock at once exactly one wins.

The holder is a real ``build_catalogue_index`` in a subprocess whose ``embed_files`` signals that it started and
then waits (``HOLDER``, at most two minutes): it holds the lock until the test kills it. Every wait has a timeout.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.errors import SingrecError
from index.build import build_catalogue_index
from index.lock import LOCK_NAME, index_lock
from index.store import read_info

ROOT = Path(__file__).resolve().parents[1]
WAIT = 120  # seconds for a subprocess to reach its waiting point (imports torch; the machine is shared)

HOLDER = """
import sys, time
from pathlib import Path
import index.build as build
catalogue, out, checkpoints, started = sys.argv[1:5]
def waiting(paths, encoders):
    Path(started).touch()
    time.sleep(120)
    sys.exit("not killed by the test")
build.embed_files = waiting
build.build_catalogue_index(catalogue, out, checkpoints=checkpoints, progress=False)
"""


def _start_holder(tiny_catalogue, tiny_checkpoints, out: Path, tmp_path: Path):
    """A build in a subprocess, waiting in its first embedding (it holds the lock) until it is killed."""
    started = tmp_path / "started"
    log = open(tmp_path / "holder.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tiny_catalogue), str(out), str(tiny_checkpoints),
                             str(started)], cwd=ROOT, env={**os.environ, "SINGREC_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    deadline = time.monotonic() + WAIT
    while not started.exists():
        if proc.poll() is not None:
            pytest.fail(f"the holder build ended early:\n{(tmp_path / 'holder.log').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the holder build never started embedding")
        time.sleep(0.05)
    return proc


def _kill(proc) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_second_build_fails_at_once_naming_the_first(tiny_catalogue, tiny_checkpoints, tiny_encoders, tmp_path):
    out = tmp_path / "idx"
    proc = _start_holder(tiny_catalogue, tiny_checkpoints, out, tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(SingrecError) as err:
            build_catalogue_index(tiny_catalogue, out, encoders=tiny_encoders, progress=False)
        assert time.monotonic() - t0 < 3.0  # refused before anything is embedded
        msg = str(err.value)
        assert msg.startswith(f"{out}: another build is writing this index: pid {proc.pid} on host "
                              f"{socket.gethostname()}, started "), msg
        assert "-c " in msg  # its command line
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # the holder's lock is untouched
        assert proc.poll() is None and not (out / "build" / "part-00000.npz").exists()  # nothing embedded; the holder runs on
    finally:
        _kill(proc)


def test_a_killed_builds_lock_is_taken_over(tiny_catalogue, tiny_checkpoints, tiny_encoders, tmp_path, caplog):
    out = tmp_path / "idx"
    proc = _start_holder(tiny_catalogue, tiny_checkpoints, out, tmp_path)
    _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind by the killed build
    with caplog.at_level(logging.WARNING, logger="index.lock"):
        report = build_catalogue_index(tiny_catalogue, out, encoders=tiny_encoders, progress=False)
    assert report.n_songs == 12 and report.n_embedded == 12 and read_info(out)["counts"]["songs"] == 12
    assert any(f"taking over the lock of pid {proc.pid} " in r.getMessage() for r in caplog.records), caplog.text
    assert not (out / LOCK_NAME).exists()  # released on success


def test_the_lock_is_released_on_error(tiny_encoders, tmp_path):
    out = tmp_path / "idx"
    with pytest.raises(SingrecError, match="not found"):
        build_catalogue_index(tmp_path / "no_catalogue", out, encoders=tiny_encoders, progress=False)
    assert not (out / LOCK_NAME).exists()
    with index_lock(out):  # free again
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


TAKER = """
import sys, time
from pathlib import Path
from data.errors import SingrecError
from index.lock import index_lock
out, go, ready = sys.argv[1:4]
Path(ready).touch()
deadline = time.monotonic() + 60
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
try:
    with index_lock(out):
        print("won", flush=True)
        time.sleep(2.0)
except SingrecError as exc:
    print("lost", exc, flush=True)
"""


def test_of_several_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    out, go = tmp_path / "idx", tmp_path / "go"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(),
                                             "started": "2000-01-01T00:00:00+00:00", "command": "killed"}))
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(out), str(go), str(r)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in ready]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):  # all started: they race for the lock together
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a taker did not start"
            time.sleep(0.02)
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    won = [p.pid for p, (o, _) in zip(procs, results) if o.startswith("won")]
    assert len(won) == 1, results
    for p, (o, _) in zip(procs, results):
        if p.pid != won[0]:
            assert o.startswith("lost") and f"pid {won[0]} on host" in o, o
    assert not (out / LOCK_NAME).exists()
