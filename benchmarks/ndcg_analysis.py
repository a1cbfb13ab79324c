"""What limits nDCG@10 of the similar-singer ranking against the synthetic ground truth?

The ground truth (``recsys.evaluate.ground_truth_neighbours``) ranks singers by Euclidean distance between
their standardised 19-parameter vectors (formants, source, vibrato, onset habits, ...). This script measures:

1. **Ceiling vs estimation noise**: nDCG@10 of a ranking by the *true* standardised parameters plus Gaussian
   noise of a given standard deviation (in units of each parameter's spread), i.e. how accurately a system
   must know every parameter to reach a given nDCG. Noise sigma relates to R^2 as R^2 ~ 1 / (1 + sigma^2).
2. **What the timbre vectors carry**: a ridge probe (alpha by cross-validation) from singer timbre vectors of
   a *training* index to the standardised parameters, scored on the singers of an *evaluation* index (other
   singers): per-parameter R^2, and nDCG@10 of ranking by the predicted parameters, next to plain cosine on
   the same vectors.
3. **Which parameters matter**: nDCG@10 of a ranking by the true values of only the parameters the probe
   recovers (R^2 >= 0.5), i.e. what even perfect estimates of those would score.

Run (after ``make demo`` and ``python benchmarks/ranking.py --work out/ranking``)::

    python benchmarks/ndcg_analysis.py --train-index demo_data/index --eval-index out/ranking/index_learned
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from encoders.base import distance_ranking_ndcg  # noqa: E402
from index.store import current_snapshot  # noqa: E402
from recsys.evaluate import ground_truth_neighbours, load_ground_truth  # noqa: E402
from _report import write_section  # noqa: E402

K = 10


def singer_table(index_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(ground truth rows in index singer order, singer timbre vectors (S, d)) of an index directory."""
    snap = current_snapshot(index_dir)  # the published snapshot (index/store.py)
    info = json.loads((snap / "index.json").read_text())
    gt = load_ground_truth(info)
    if gt is None:
        raise SystemExit(f"{index_dir}: its catalogue has no ground_truth/singers.csv")
    singers = pd.read_parquet(snap / "singers.parquet")["singer"]
    vecs = np.load(snap / "embeddings" / "singers_timbre.npy")
    gt = gt.set_index("singer").loc[singers].reset_index()
    return gt, vecs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-index", type=Path, default=Path("demo_data/index"),
                    help="index of the catalogue the encoders were trained on (the probe is fitted here)")
    ap.add_argument("--eval-index", type=Path, required=True, help="index of a catalogue of other singers")
    ap.add_argument("--write", action="store_true",
                    help="also replace this script's whole section of BENCHMARKS.md with the output (the section's "
                         "hand-written notes are lost; default: print only)")
    args = ap.parse_args()

    gt0, v0 = singer_table(args.train_index)
    gt1, v1 = singer_table(args.eval_index)
    cols = [c for c in gt1.columns if c.startswith("p_")]
    mu, sd = gt0[cols].mean().to_numpy(), gt0[cols].std().to_numpy()
    y0 = (gt0[cols].to_numpy(float) - mu) / sd
    y1 = (gt1[cols].to_numpy(float) - mu) / sd
    z1 = (gt1[cols].to_numpy(float) - gt1[cols].mean().to_numpy()) / gt1[cols].std(ddof=0).to_numpy()
    names = gt1["singer"].tolist()
    truth = ground_truth_neighbours(gt1, K)
    out = []

    # 1. ceiling vs noise
    rng = np.random.default_rng(0)
    rows = []
    for sigma in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        vals = [distance_ranking_ndcg(names, z1 + sigma * rng.standard_normal(z1.shape), truth, K) for _ in range(5)]
        rows.append(f"| {sigma:.1f} | {1 / (1 + sigma ** 2):.2f} | {np.mean(vals):.3f} |")
    out.append("Ranking by the true standardised parameters plus Gaussian noise (mean of 5 draws):\n\n"
               "| noise sigma (per parameter, in its std) | R^2 it corresponds to | nDCG@10 |\n|---|---|---|\n"
               + "\n".join(rows))

    # 2. ridge probe from the timbre vectors
    probe = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(v0, y0)
    pred = probe.predict(v1)
    r2 = 1 - ((pred - y1) ** 2).mean(0) / y1.var(0)
    cos = v1 / np.linalg.norm(v1, axis=1, keepdims=True)
    ndcg_cos = distance_ranking_ndcg(names, cos, truth, K)  # Euclidean on unit vectors = cosine ranking
    ndcg_probe = distance_ranking_ndcg(names, pred, truth, K)
    r2_rows = "\n".join(f"| {c[2:]} | {v:.2f} |" for c, v in sorted(zip(cols, r2), key=lambda t: -t[1]))
    out.append(f"Singer timbre vectors of `{args.eval_index}` ({len(names)} singers) against their ground truth; "
               f"ridge probe (alpha {probe.alpha_:g}) fitted on the {len(gt0)} singers of `{args.train_index}`:\n\n"
               f"| ranking | nDCG@10 |\n|---|---|\n| cosine on singer timbre vectors | {ndcg_cos:.3f} |\n"
               f"| distance between probe-predicted parameters | {ndcg_probe:.3f} |\n\n"
               f"Per-parameter R^2 of the probe on the evaluation singers:\n\n| parameter | R^2 |\n|---|---|\n"
               f"{r2_rows}")

    # 3. perfect knowledge of the recovered parameters only
    good = r2 >= 0.5
    ndcg_good = distance_ranking_ndcg(names, z1[:, good], truth, K)
    out.append(f"Ranking by the *true* values of only the {int(good.sum())} parameters the probe recovers with "
               f"R^2 >= 0.5 ({', '.join(c[2:] for c, g in zip(cols, good) if g)}): nDCG@10 **{ndcg_good:.3f}**. "
               f"The other {int((~good).sum())} parameters (source and pitch-contour habits) carry the rest of the "
               f"ground-truth distance.")

    body = ("\n\n".join(out) + "\n\nReproduce: `python benchmarks/ndcg_analysis.py --train-index "
            f"{args.train_index} --eval-index {args.eval_index}`")
    print(body)
    if args.write:
        write_section(ROOT / "BENCHMARKS.md", "Similar-singer ranking: what limits nDCG@10", body)


if __name__ == "__main__":
    main()
