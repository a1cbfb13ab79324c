"""Held-out quality of the whole system: retrieval metrics and nDCG@10 of the similar-singer ranking against
the synthetic ground truth, for the shipped encoders and for the MFCC baseline behind the same index/ranker
(MFCC vectors as timbre and melody).

The catalogue is synthesized with a seed the shipped weights were not trained on (default: 1), so every
singer is unseen. Ground-truth neighbours are the nearest singers by standardised singer-parameter distance
(recsys.evaluate.ground_truth_neighbours).

Run: ``.venv/bin/python benchmarks/ranking.py [--seed 1 --singers 150] [--work DIR]``
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from data.audio import load_audio
from data.catalogue import Catalogue
from encoders.baselines import MFCCEmbedder
from encoders.base import set_torch_threads
from index.build import build_catalogue_index
from recsys.evaluate import evaluate_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--singers", type=int, default=150)
    ap.add_argument("--work", type=Path, default=None, help="keep the catalogue and indexes here")
    args = ap.parse_args()
    set_torch_threads()
    work = args.work or Path(tempfile.mkdtemp(prefix="singrec-ranking-"))
    from data.synth import synthesize_catalogue
    manifest = synthesize_catalogue(work / f"catalogue_seed{args.seed}", singers=args.singers, seed=args.seed,
                                    workers=2)
    cat = Catalogue.open(manifest)

    build_catalogue_index(cat, work / "index_learned")  # shipped encoders
    learned = evaluate_index(work / "index_learned")

    mfcc = MFCCEmbedder()
    mfcc.fit(mfcc.raw_waveforms([load_audio(p) for p in cat.songs["path"]]))  # unsupervised standardisation
    build_catalogue_index(cat, work / "index_mfcc", encoders={"timbre": mfcc, "melody": mfcc})
    baseline = evaluate_index(work / "index_mfcc")

    print(f"\nheld-out catalogue: seed {args.seed}, {learned['singers']} unseen singers, {learned['songs']} songs")
    print("| metric | shipped encoders | MFCC baseline |")
    print("|---|---|---|")
    for key in learned:
        if key in ("songs", "singers"):
            continue
        print(f"| {key} | {learned[key]:.3f} | {baseline.get(key, float('nan')):.3f} |")


if __name__ == "__main__":
    main()
