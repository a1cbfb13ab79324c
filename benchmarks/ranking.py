"""Held-out quality of the whole system: retrieval metrics and nDCG@10 of the similar-singer ranking against
the synthetic ground truth, for the shipped encoders (with the voice profile head) and for the MFCC baseline
behind the same index/ranker (MFCC vectors as timbre and melody; without ``--mfcc-head`` no head reads them,
so its profile part is the twelve expression descriptors).

The catalogue is synthesized with a seed the shipped weights were not trained on (default: 1), so every
singer is unseen. Ground-truth neighbours are the nearest singers by standardised singer-parameter distance
(recsys.evaluate.ground_truth_neighbours).

``--mfcc-head DIR`` (from ``benchmarks/mfcc_head.py``) makes the MFCC column like for like: a profile head
fitted on the same training singers and voice statistics as the shipped head, with MFCC vectors in place of
the timbre vectors (and the MFCC standardisation fixed on those training songs).

Run: ``.venv/bin/python benchmarks/ranking.py [--seed 1 --singers 150] [--work DIR] [--mfcc-head DIR]``
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from data.audio import load_audio
from data.catalogue import Catalogue
from encoders.baselines import MFCCEmbedder
from encoders.base import set_torch_threads
from encoders.checkpoint import load_encoder
from index.build import build_catalogue_index
from recsys.evaluate import evaluate_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--singers", type=int, default=150)
    ap.add_argument("--work", type=Path, default=None, help="keep the catalogue and indexes here")
    ap.add_argument("--mfcc-head", type=Path, default=None, help="folder written by benchmarks/mfcc_head.py")
    args = ap.parse_args()
    set_torch_threads()
    work = args.work or Path(tempfile.mkdtemp(prefix="singrec-ranking-"))
    from data.synth import synthesize_catalogue
    manifest = synthesize_catalogue(work / f"catalogue_seed{args.seed}", singers=args.singers, seed=args.seed,
                                    workers=2)
    cat = Catalogue.open(manifest)

    build_catalogue_index(cat, work / "index_learned")  # shipped encoders and voice profile head
    learned = evaluate_index(work / "index_learned")

    if args.mfcc_head:  # like for like: a head fitted on MFCC vectors of the shipped head's training songs
        with np.load(args.mfcc_head / "mfcc.npz") as z:
            mfcc = MFCCEmbedder(mean=z["mean"], scale=z["scale"])
        baseline_encoders = {"timbre": mfcc, "melody": mfcc,
                             "profile": load_encoder(args.mfcc_head / "profile.pt", kind="profile")}
    else:  # no head reads these MFCC vectors: this ranker's profile part is the expression descriptors
        mfcc = MFCCEmbedder()
        mfcc.fit(mfcc.raw_waveforms([load_audio(p) for p in cat.songs["path"]]))  # unsupervised standardisation
        baseline_encoders = {"timbre": mfcc, "melody": mfcc}
    build_catalogue_index(cat, work / "index_mfcc", encoders=baseline_encoders)
    baseline = evaluate_index(work / "index_mfcc")

    print(f"\nheld-out catalogue: seed {args.seed}, {learned['singers']} unseen singers, {learned['songs']} songs")
    print("| metric | shipped encoders | MFCC baseline" + (" (with its own head)" if args.mfcc_head else "") + " |")
    print("|---|---|---|")
    for key in learned:
        if key in ("songs", "singers"):
            continue
        print(f"| {key} | {learned[key]:.3f} | {baseline.get(key, float('nan')):.3f} |")


if __name__ == "__main__":
    main()
