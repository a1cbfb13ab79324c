"""Indexing throughput, end to end: audio files -> finished index directory, in x real time.

Synthesizes a catalogue (or takes --catalogue), then runs ``build_catalogue_index`` with the shipped encoders
three times into fresh folders and reports the median; the embedding stage (decode + features + both encoders) and
the whole build (including the sung range, measured from the decoded audio, FAISS, tables and the UMAP map, with
numba already warm) are timed separately.

Run: ``.venv/bin/python benchmarks/indexing.py [--catalogue DIR] [--singers 20 --songs 3 --seconds 60]``
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from encoders.base import set_torch_threads
from encoders.checkpoint import load_default_encoders
from encoders.embed import embed_songs
from index.build import build_catalogue_index

from _report import add_catalogue_args, catalogue_from_args  # noqa: E402  (benchmarks/ is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalogue_args(ap, seed=7, singers=20, songs=3, seconds=60.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    set_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="singrec-bench-"))
    try:
        cat = catalogue_from_args(args, work)
        encoders = load_default_encoders()
        # warm-up: numba/UMAP compilation and file cache, not counted
        build_catalogue_index(cat, work / "warm", encoders=encoders, progress=False)
        audio = None
        embed_t, total_t = [], []
        for r in range(args.runs):
            t0 = time.perf_counter()
            embed_songs(cat.songs["path"].tolist(), encoders, progress=False)
            embed_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = build_catalogue_index(cat, work / f"run{r}", encoders=encoders, progress=False)
            total_t.append(time.perf_counter() - t0)
            audio = report.audio_seconds
        e, t = float(np.median(embed_t)), float(np.median(total_t))
        print(f"\ncatalogue: {len(cat)} songs, {audio / 60:.1f} min of audio; median of {args.runs} runs")
        print("| stage | seconds | x real time | 3-min song |")
        print("|---|---|---|---|")
        print(f"| embedding (decode + log-mel + timbre + melody) | {e:.2f} | "
              f"{audio / e:.0f}x | {180 * e / audio:.2f} s |")
        print(f"| whole build (+ sung range, FAISS, tables, UMAP map, snapshot) | {t:.2f} | "
              f"{audio / t:.0f}x | {180 * t / audio:.2f} s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
