"""Start the explorer page: ``streamlit run app/streamlit_app.py -- INDEX_DIR`` with sensible settings.

``serve`` turns the calling process into the server (the ``singrec app`` and ``singrec demo`` verbs and
``python -m app``); ``start`` returns the running server process (tests and benchmarks), ``wait_ready`` polls
its health endpoint, ``stop`` ends it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.explorer import MAX_UPLOAD_MB

PAGE = Path(__file__).with_name("streamlit_app.py")


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_index(index_dir: str | Path) -> Path:
    """The resolved index folder, checked by :func:`index.store.read_info` (exists, a published snapshot, its
    format version)."""
    from index.store import read_info

    index_dir = Path(index_dir).expanduser().resolve()
    read_info(index_dir)
    return index_dir


def command(index_dir: str | Path, port: int = 8501, headless: bool = True,
            address: str | None = None) -> list[str]:
    """The ``streamlit run`` command line for the page."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(PAGE),
           "--server.port", str(int(port)),
           "--server.headless", "true" if headless else "false",
           "--server.fileWatcherType", "none",
           "--server.runOnSave", "false",
           "--server.maxUploadSize", str(MAX_UPLOAD_MB),
           "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal",
           "--theme.base", "light"]
    if address:
        cmd += ["--server.address", address]
    return cmd + ["--", str(index_dir)]


def start(index_dir: str | Path, port: int = 8501, headless: bool = True, address: str | None = None,
          log: str | Path | None = None) -> subprocess.Popen:
    """Start the server in the background (its own process group); stdout+stderr go to ``log`` if given."""
    index_dir = _check_index(index_dir)
    out = open(log, "ab") if log else subprocess.DEVNULL
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    try:
        return subprocess.Popen(command(index_dir, port, headless, address), stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        if log:
            out.close()


def wait_ready(proc: subprocess.Popen, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> str:
    """Poll the server's health endpoint until it answers; returns the page URL.

    Raises RuntimeError if the process exits first or ``timeout`` seconds pass.
    """
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the streamlit server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the streamlit server did not answer on {url} within {timeout:g} s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server (SIGTERM to its process group, then SIGKILL)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


def serve(index_dir: str | Path, port: int = 8501, headless: bool = True, address: str | None = None) -> None:
    """Run the page for ``index_dir`` in this process until it is stopped (Ctrl-C, SIGTERM); does not return.

    The process is replaced by streamlit (``os.execv``; same pid), so a signal sent to ``singrec app`` or
    ``singrec demo`` reaches the server itself, which stops and frees the port: no child process is left
    holding it, whatever stops the command (SIGKILL included). Nothing runs after the page in either verb.

    Raises
    ------
    SingrecError : ``index_dir`` is not an index directory.
    """
    index_dir = _check_index(index_dir)
    print(f"singrec explorer: http://{address or 'localhost'}:{port}  (index {index_dir}; Ctrl-C to stop)",
          flush=True)
    cmd = command(index_dir, port, headless, address)
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
