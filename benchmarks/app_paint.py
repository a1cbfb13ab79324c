"""First meaningful paint of the explorer page (app/streamlit_app.py) in headless Debian chromium.

Starts the real Streamlit server on the given index (default: ``demo_data/index``, the default 150-singer
catalogue), loads the page once to warm it (index loaded, default query cached), then loads it ``--loads``
more times and times each from navigation to *meaningful*: the map plotted (Plotly has drawn its traces)
and the results table of the default query filled in. Two browser states:

* warm: one browser profile for all loads (its HTTP cache holds Streamlit's and Plotly's JavaScript), as a
  returning user;
* fresh profile: a new, empty profile per load (everything downloaded again from the local server).

For scale, the same measurement on a *reference* page (just a heading, a 10-row ``st.dataframe`` and a
900-point ``Scattergl``: the least any Streamlit page showing a map and a table costs on this machine at
this moment) is interleaved with the explorer's loads, since the shared cores make absolute times drift.

Prints a markdown table (``--write``: also replaces the "App (`benchmarks/app_paint.py`)" section of BENCHMARKS.md).
``--screenshot PATH`` also saves a screenshot of the warm page.

Run: ``.venv/bin/python benchmarks/app_paint.py [--index demo_data/index] [--loads 7]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from app import serve
from _report import write_section  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SINGREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1480, "height": 1040}
TIMEOUT_MS = 120_000

# true once Plotly has drawn the map's traces and the results grid has rows
READY_JS = """(title) => {
  const plot = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
  if (!plot || !plot._fullData || plot._fullData.length === 0) return false;
  if (!plot.querySelector("canvas")) return false;
  const heads = [...document.querySelectorAll("h3")].map(h => h.innerText);
  if (!heads.some(t => t.includes(title))) return false;
  const grid = document.querySelector("[data-testid='stDataFrame'] tbody tr");
  return !!grid;
}"""


REFERENCE_PAGE = """
import numpy as np, pandas as pd, plotly.graph_objects as go, streamlit as st
st.set_page_config(layout="wide")
st.subheader({title!r})
rng = np.random.default_rng(0)
st.dataframe(pd.DataFrame({{"singer": [f"s{{i}}" for i in range(10)], "score": rng.random(10)}}))
st.plotly_chart(go.Figure(go.Scattergl(x=rng.random(900), y=rng.random(900), mode="markers")))
"""


def start_reference(title: str, folder: Path):
    """A Streamlit server for the reference page; returns (process, url)."""
    import subprocess
    import sys

    script = folder / "reference_page.py"
    script.write_text(REFERENCE_PAGE.format(title=title))
    port = serve.free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false", "--theme.base", "light"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, serve.wait_ready(proc, port, timeout=120)


def load_once(ctx, url: str, title: str) -> float:
    """Seconds from navigation start to a meaningful page (map plotted + results table filled)."""
    page = ctx.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        page.wait_for_function(READY_JS, arg=title, timeout=TIMEOUT_MS, polling=50)
        return time.perf_counter() - t0
    finally:
        page.close()


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, default=ROOT / "demo_data" / "index")
    ap.add_argument("--loads", type=int, default=7, help="timed loads per browser state")
    ap.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the warm page here")
    ap.add_argument("--write", action="store_true",
                    help="also replace this script's whole section of BENCHMARKS.md with the output (the section's "
                         "hand-written notes are lost; default: print only)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from index.store import current_snapshot

    snap = current_snapshot(args.index)  # the published snapshot (index/store.py)
    singers = pd.read_parquet(snap / "singers.parquet")
    n_songs = len(pd.read_parquet(snap / "songs.parquet", columns=["song_id"]))
    title = f"Singers who sound like {singers['singer'].iloc[0]}"
    load_before = os.getloadavg()[0]
    port = serve.free_port()
    tmp = Path(tempfile.mkdtemp(prefix="singrec-paint-"))
    proc = serve.start(args.index, port=port, address="127.0.0.1", log=tmp / "server.log")
    ref_proc = None
    warm, fresh, ref_warm = [], [], []
    try:
        url = serve.wait_ready(proc, port, timeout=120)
        ref_proc, ref_url = start_reference(title, tmp)
        with sync_playwright() as p:
            launch = dict(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
            with tempfile.TemporaryDirectory(prefix="singrec-chromium-") as prof:
                ctx = p.chromium.launch_persistent_context(prof, **launch)
                cold = load_once(ctx, url, title)  # first ever load: server caches + browser cache fill
                load_once(ctx, url, title)
                load_once(ctx, ref_url, title)
                load_once(ctx, ref_url, title)
                for _ in range(args.loads):  # interleaved, so both see the same machine load
                    warm.append(load_once(ctx, url, title))
                    ref_warm.append(load_once(ctx, ref_url, title))
                if args.screenshot:
                    page = ctx.new_page()
                    page.goto(url)
                    page.wait_for_function(READY_JS, arg=title, timeout=TIMEOUT_MS)
                    page.mouse.move(5, 5)
                    time.sleep(1.5)
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshot))
                    page.close()
                ctx.close()
            for _ in range(args.loads):
                with tempfile.TemporaryDirectory(prefix="singrec-chromium-") as prof:
                    ctx = p.chromium.launch_persistent_context(prof, **launch)
                    fresh.append(load_once(ctx, url, title))
                    ctx.close()
    finally:
        serve.stop(proc)
        if ref_proc is not None:
            serve.stop(ref_proc)

    def row(name, xs):
        return f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |"

    load_after = os.getloadavg()[0]
    body = "\n".join([
        f"First meaningful paint of the explorer page (navigation -> map plotted and results table of the "
        f"default query filled), headless Debian chromium, index `{_shown(args.index)}` "
        f"({len(singers)} singers, {n_songs} songs), server warm (index loaded, default query cached). "
        f"Target: <= 3 s warm.",
        "",
        "| page, browser | loads | median s | min s | max s |",
        "|---|---|---|---|---|",
        row("explorer, warm profile (returning user)", warm),
        row("reference page (heading + 10-row table + 900-point Scattergl), warm profile, interleaved", ref_warm),
        row("explorer, fresh profile per load", fresh),
        f"| explorer, first load after server start | 1 | {cold:.2f} | {cold:.2f} | {cold:.2f} |",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), 1-min load average {load_before:.1f} before and "
        f"{load_after:.1f} after the run "
        "(the cores are shared with other jobs). "
        f"Command: `.venv/bin/python benchmarks/app_paint.py --index {_shown(args.index)} "
        f"--loads {args.loads}`",
    ])
    print(body)
    if args.write:
        write_section(ROOT / "BENCHMARKS.md", "App (`benchmarks/app_paint.py`)", body)
        print(f"\nwrote the App section of {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
