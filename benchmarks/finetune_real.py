"""Adapting the timbre encoder to a labelled catalogue of real singers: fine-tune on some singers, measure on others.

The MIR-1K dev set's singers are split (seeded) into ``--train-singers`` singers whose clips fine-tune the shipped
timbre encoder (``singrec train MANIFEST --encoder timbre``, which starts from the shipped weights) and the
others, on whose clips singer top-1 / mAP (own song excluded) is measured before and after. The weights trained
here are written under ``--work`` only: weights trained on the dev set are never shipped.

Run: ``.venv/bin/python benchmarks/finetune_real.py ../shared/realdev/mir1k --work /tmp/finetune [--epochs 20]``
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.audio import load_audio
from encoders.checkpoint import DEFAULT_CHECKPOINTS, load_encoder
from encoders.train import train
from recsys.evaluate import mean_average_precision, singer_top1


def scores(checkpoint: Path, clips: pd.DataFrame, waves: list[np.ndarray]) -> tuple[float, float]:
    """Singer top-1 and mAP of a timbre checkpoint's vectors of ``clips``, own song excluded."""
    v = load_encoder(checkpoint, kind="timbre").embed_waveforms(waves)
    return (singer_top1(v, clips["singer"], exclude=clips["song"]),
            mean_average_precision(v, clips["singer"], exclude=clips["song"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dev", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/singrec-finetune"))
    ap.add_argument("--train-singers", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev, work = args.dev.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    man = pd.read_csv(dev / "manifest.csv")
    man["path"] = [str(dev / p) for p in man["path"]]
    singers = sorted(man["singer"].unique())
    chosen = set(np.random.default_rng(args.seed).permutation(singers)[:args.train_singers])
    train_clips, test_clips = man[man["singer"].isin(chosen)], man[~man["singer"].isin(chosen)]
    train_clips[["path", "singer", "song"]].to_csv(work / "train.csv", index=False)
    print(f"fine-tuning on {len(chosen)} singers ({len(train_clips)} clips): {', '.join(sorted(chosen))}")
    print(f"measuring on {test_clips['singer'].nunique()} others ({len(test_clips)} clips)")

    t0 = time.perf_counter()
    tuned = train(work / "train.csv", work / "tuned", encoder="timbre", init="shipped", epochs=args.epochs,
                  lr=args.lr, seed=args.seed)["timbre"]
    seconds = time.perf_counter() - t0
    waves = [load_audio(p) for p in test_clips["path"]]
    before = scores(DEFAULT_CHECKPOINTS["timbre"], test_clips, waves)
    after = scores(tuned, test_clips, waves)
    print(f"| held-out singers ({test_clips['singer'].nunique()}), clips, own song excluded | singer top-1 | mAP |")
    print("|---|---|---|")
    print(f"| shipped timbre encoder | {before[0]:.3f} | {before[1]:.3f} |")
    print(f"| fine-tuned on the other {len(chosen)} singers ({args.epochs} epochs, lr {args.lr:g}, "
          f"{seconds:.0f} s) | {after[0]:.3f} | {after[1]:.3f} |")


if __name__ == "__main__":
    main()
