"""MFCC mean+std nearest-neighbour baseline on a (synthetic) catalogue: how hard is singer retrieval?

For every song, is its nearest other song (cosine of standardised MFCC statistics) by the same singer
(top-1), and the mean average precision of same-singer songs. The synthetic catalogue is built so that this
baseline does *not* solve it (recording chains vary within a singer), while the voices stay identifiable.

    python benchmarks/mfcc_baseline.py                       # synthesize the default catalogue to a temp dir
    python benchmarks/mfcc_baseline.py --catalogue DIR       # use an existing catalogue (folder or manifest)
    python benchmarks/mfcc_baseline.py --singers 40 --workers 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.audio import load_audio  # noqa: E402
from data.catalogue import Catalogue  # noqa: E402
from data.synth import DEFAULT_SECONDS, DEFAULT_SINGERS, DEFAULT_SONGS, synthesize_catalogue  # noqa: E402
from encoders.baselines import MFCCEmbedder  # noqa: E402
from recsys.evaluate import mean_average_precision, singer_top1  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogue", type=Path, help="existing catalogue folder or manifest; default: synthesize")
    ap.add_argument("--singers", type=int, default=DEFAULT_SINGERS)
    ap.add_argument("--songs", type=int, default=DEFAULT_SONGS)
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.catalogue
        if source is None:
            t0 = time.perf_counter()
            source = synthesize_catalogue(Path(tmp) / "cat", singers=args.singers, songs=args.songs,
                                          seconds=args.seconds, seed=args.seed, workers=args.workers)
            print(f"synthesized {args.singers} x {args.songs} x {args.seconds:g} s in "
                  f"{time.perf_counter() - t0:.1f} s")
        songs = Catalogue.open(source).songs
        t0 = time.perf_counter()
        emb = MFCCEmbedder()
        raw = emb.raw_waveforms([load_audio(p) for p in songs["path"]])
        vectors = emb.fit(raw).transform(raw)
        took = time.perf_counter() - t0

    singers = songs["singer"].to_numpy()
    n_singers = len(set(singers))
    rows = [("songs / singers", f"{len(songs)} / {n_singers}"),
            ("MFCC singer top-1", f"{singer_top1(vectors, singers):.3f}"),
            ("MFCC singer mAP", f"{mean_average_precision(vectors, singers):.3f}"),
            ("chance top-1", f"{(len(songs) / n_singers - 1) / (len(songs) - 1):.3f}")]
    if "melody_id" in songs:
        rows.append(("MFCC melody mAP (other singers)",
                     f"{mean_average_precision(vectors, songs['melody_id'], exclude=singers):.3f}"))
    rows.append(("embedding time", f"{took:.1f} s"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'metric':<{width}}  value\n{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
