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
from encoders.baselines import MFCCEmbedder  # noqa: E402
from recsys.evaluate import mean_average_precision, singer_top1  # noqa: E402
from _report import add_catalogue_args, catalogue_from_args  # noqa: E402  (benchmarks/ is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_catalogue_args(ap, seed=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        songs = catalogue_from_args(args, Path(tmp)).songs
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
