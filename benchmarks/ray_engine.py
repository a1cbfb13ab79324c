"""In-process vs Ray engine of ``singrec index`` on this machine: wall time, songs/s, peak memory, Ray start-up.

Synthesizes a catalogue (or takes --catalogue) and runs ``singrec index`` once per engine in a subprocess with the
shipped encoders; the memory is the peak summed RSS of the command and every process under it (Ray's GCS, raylet,
workers and actors included), sampled every 0.2 s. Ray runs a private local instance with ``--actors`` actors.

Run: ``.venv/bin/python benchmarks/ray_engine.py [--catalogue DIR] [--singers 20 --songs 5 --seconds 10]``
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import add_catalogue_args, catalogue_from_args  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(pid: int) -> int:
    """Summed RSS in bytes of ``pid`` and every process under it."""
    parent, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            parent[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        tree.update(kids)
        todo += kids
    return sum(rss.get(p, 0) for p in tree)


def run(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(out[-3000:])
    start = re.search(r"started in ([\d.]+) s", out)
    return {"seconds": time.perf_counter() - t0, "peak_gb": peak / 1e9,
            "ray_start": float(start.group(1)) if start else None,
            "summary": next(l for l in out.splitlines() if l.startswith("indexed"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalogue_args(ap, seed=7, singers=20, songs=5, seconds=10.0)
    ap.add_argument("--actors", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="singrec-ray-bench-"))
    try:
        base = [sys.executable, "-m", "app.cli", "-v", "index", str(catalogue_from_args(args, work).source.resolve())]
        rows = {"in-process": run(base + ["--out", str(work / "a")]),
                "ray": run(base + ["--out", str(work / "b"), "--engine", "ray", "--actors", str(args.actors)])}
        n = int(re.search(r"indexed (\d+) songs", rows["ray"]["summary"]).group(1))
        print(f"{n} songs of {args.seconds:g} s, {os.cpu_count()} CPUs, Ray actors: {args.actors}")
        print("| engine | wall s | songs/s | peak memory GB | Ray start s |")
        print("|---|---|---|---|---|")
        for name, r in rows.items():
            start = f"{r['ray_start']:.1f}" if r["ray_start"] is not None else "-"
            print(f"| {name} | {r['seconds']:.1f} | {n / r['seconds']:.1f} | {r['peak_gb']:.2f} | {start} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
