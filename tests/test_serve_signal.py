"""``singrec app`` stops with its command: SIGTERM to the ``singrec app`` process leaves no process of its
group or of its descendants running, and the port is free again (app/serve.py replaces the process with the
server). Processes are checked by the pids recorded while the page was up, never by name; every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import serve

STOP_WAIT = 30  # seconds for the server to stop after SIGTERM


def _descendants(pid: int) -> set[int]:
    """Pids of every process below ``pid`` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += sorted(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            s.bind(("0.0.0.0", port))
            s.listen()
        except OSError:
            return False
    return True


def test_sigterm_stops_singrec_app_and_frees_the_port(tiny_index, tmp_path):
    exe = shutil.which("singrec", path=str(Path(sys.executable).parent))
    assert exe, "the singrec console script is not installed next to this python"
    port = serve.free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "app", str(tiny_index), "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # its own process group
    pids, stopped = {proc.pid}, False
    try:
        try:
            serve.wait_ready(proc, port, timeout=120)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n--- log ---\n{log.read_text(errors='replace')[-3000:]}")
        assert not _port_free(port)
        pids |= _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_WAIT)
        deadline = time.monotonic() + STOP_WAIT
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], f"left running: {pids}"
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing left in its process group
        assert _port_free(port)
        stopped = True
    finally:
        for p in [] if stopped else pids:  # clean up whatever a failure left, by the recorded pids
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=STOP_WAIT)
