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

from data.catalogue import Catalogue
from encoders.base import set_torch_threads
from encoders.checkpoint import load_default_encoders
from encoders.embed import embed_songs
from index.build import build_catalogue_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", type=Path)
    ap.add_argument("--singers", type=int, default=20)
    ap.add_argument("--songs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    set_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="singrec-bench-"))
    try:
        if args.catalogue is None:
            from data.synth import synthesize_catalogue
            args.catalogue = synthesize_catalogue(work / "catalogue", singers=args.singers, songs=args.songs,
                                                  seconds=args.seconds, seed=7)
        cat = Catalogue.open(args.catalogue)
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
        print(f"| whole build (+ sung range, FAISS, tables, UMAP map, snapshot) | {t:.2f} | {audio / t:.0f}x | {180 * t / audio:.2f} s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
