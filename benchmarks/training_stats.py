"""Throughput of reading training songs for the voice profile head (``singrec train --encoder profile``): the
voice statistics and timbre vectors of ``encoders.profile.embed_in_processes``, one process against several.

Reads the first ``--songs`` songs of a synthetic catalogue (default: the demo catalogue), once per worker count,
after a warm-up on a few songs, and prints songs/s and the rows' largest difference from the one-process run.

Run: ``SINGREC_THREADS=2 .venv/bin/python benchmarks/training_stats.py [--catalogue demo_data/catalogue]
[--songs 600] [--workers 1,2] [--chunk 64]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from data.catalogue import Catalogue
from encoders.checkpoint import DEFAULT_CHECKPOINTS, load_encoder
from encoders.profile import VoiceFeatureEmbedder, embed_in_processes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", default="demo_data/catalogue")
    ap.add_argument("--songs", type=int, default=600)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--chunk", type=int, default=64, help="songs per task (train_profile: 256)")
    args = ap.parse_args()

    timbre = load_encoder(DEFAULT_CHECKPOINTS["timbre"], kind="timbre")
    encoders = {"timbre": timbre, "voice": VoiceFeatureEmbedder(features=timbre.features)}
    paths = list(Catalogue.open(args.catalogue).songs["path"])[:args.songs]
    embed_in_processes(paths[:8], encoders, workers=1, progress=False)  # warm-up (imports, first calls)
    first = None
    print(f"{len(paths)} songs of {args.catalogue}")
    for workers in (int(w) for w in args.workers.split(",")):
        start = time.perf_counter()
        vecs, failures = embed_in_processes(paths, encoders, workers=workers, chunk=args.chunk,
                                             progress=False)
        seconds = time.perf_counter() - start
        first = first or vecs
        diff = max(float(np.abs(vecs[k] - first[k]).max()) for k in vecs)
        print(f"workers {workers}: {seconds:.1f} s, {len(paths) / seconds:.1f} songs/s, {len(failures)} failed, "
              f"largest difference from the first run {diff:.1e}")


if __name__ == "__main__":
    main()
