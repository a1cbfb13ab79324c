"""Throughput of reading training songs for the voice profile head (``singrec train --encoder profile``): the
voice statistics and timbre vectors (``encoders.embed.embed_songs(..., processes=N)``), one process against several.

Reads the first ``--songs`` songs of a synthetic catalogue (default: the demo catalogue), once per process count,
after a warm-up on a few songs, and prints songs/s and the rows' largest difference from the one-process run.

Run: ``SINGREC_THREADS=2 .venv/bin/python benchmarks/training_stats.py [--catalogue demo_data/catalogue]
[--songs 600] [--processes 1,2]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from data.catalogue import Catalogue
from encoders.checkpoint import DEFAULT_CHECKPOINTS, load_encoder
from encoders.embed import embed_songs
from encoders.profile import VoiceFeatureEmbedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", default="demo_data/catalogue")
    ap.add_argument("--songs", type=int, default=600)
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts")
    args = ap.parse_args()

    timbre = load_encoder(DEFAULT_CHECKPOINTS["timbre"], kind="timbre")
    encoders = {"timbre": timbre, "voice": VoiceFeatureEmbedder(features=timbre.features)}
    paths = list(Catalogue.open(args.catalogue).songs["path"])[:args.songs]
    embed_songs(paths[:8], encoders, progress=False)  # warm-up (imports, first calls)
    first = None
    print(f"{len(paths)} songs of {args.catalogue}")
    for processes in (int(n) for n in args.processes.split(",")):
        start = time.perf_counter()
        vecs, failures = embed_songs(paths, encoders, on_error="skip", progress=False, processes=processes)
        seconds = time.perf_counter() - start
        first = first or vecs
        diff = max(float(np.abs(vecs[k] - first[k]).max()) for k in vecs)
        print(f"processes {processes}: {seconds:.1f} s, {len(paths) / seconds:.1f} songs/s, {len(failures)} failed, "
              f"largest difference from the first run {diff:.1e}")


if __name__ == "__main__":
    main()
