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
4. **A prototype of the missing part** (``--expression``): seven crude f0-contour features per song (vibrato
   rate, depth and onset, scoop, glide, pitch micro-jitter, voiced share; :func:`expression_features`, a
   benchmark-only prototype, not used by singrec) appended to the timbre vectors before the same probe.

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
from recsys.evaluate import ground_truth_neighbours, load_ground_truth, ranking_ndcg  # noqa: E402
from _report import write_section  # noqa: E402

K = 10
EXPRESSION = ["vibrato rate", "vibrato depth", "vibrato onset", "scoop", "glide share", "micro-jitter", "voiced share"]


def _f0_track(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cents, voiced) per 10 ms frame from the melody encoder's harmonic-sum salience (parabolic peak)."""
    import torch
    from dataclasses import replace
    from encoders.melody import MelodyConfig, pitch_salience

    cfg = replace(MelodyConfig(), hop_length=160, time_pool=1, n_fft=1024, bins_per_semitone=5)
    sal = pitch_salience(torch.as_tensor(wave)[None], cfg)[0].numpy()  # (P, T)
    n_p, n_t = sal.shape
    k = sal.argmax(0)
    cols = np.arange(n_t)
    a, b, c = sal[np.clip(k - 1, 0, n_p - 1), cols], sal[k, cols], sal[np.clip(k + 1, 0, n_p - 1), cols]
    den = a - 2 * b + c
    off = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1), 0.0)
    return (k + np.clip(off, -0.5, 0.5)) * 100 / cfg.bins_per_semitone, b > 0.35 * np.quantile(b, 0.95)


def expression_features(wave: np.ndarray, fps: float = 100.0) -> np.ndarray:
    """Seven f0-contour statistics of one song (see EXPRESSION); a prototype for the analysis only."""
    from scipy.ndimage import median_filter, uniform_filter1d

    cents, voiced = _f0_track(wave)
    jump = np.abs(np.diff(cents, prepend=cents[0])) > 80
    edges = np.diff(np.r_[0, (voiced & ~jump).astype(int), 0])
    notes = [(s, e) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)) if e - s >= 8]
    rate, depth, onset, scoop, jit = [], [], [], [], []
    early = int(0.3 * fps)
    for s, e in notes:
        c = cents[s:e]
        r = c - median_filter(c, size=int(0.25 * fps) | 1, mode="nearest")  # vibrato + jitter residual
        jit.append(np.median(np.abs(np.diff(r, 2))))
        if len(c) >= int(0.6 * fps):
            spec = np.abs(np.fft.rfft(r * np.hanning(len(r)), n=1024)) ** 2
            freqs = np.fft.rfftfreq(1024, 1 / fps)
            band = (freqs >= 3.5) & (freqs <= 8.5)
            rate.append(freqs[band][spec[band].argmax()])
            depth.append(np.sqrt(2) * r[early:].std())
            onset.append(r[early:].std() - r[:early].std())
        scoop.append(np.median(c[len(c) // 3:]) - c[:max(2, int(0.05 * fps))].mean())
    step = np.abs(np.diff(uniform_filter1d(cents, 3)))
    med = lambda x: float(np.median(x)) if len(x) else 0.0  # noqa: E731
    return np.array([med(rate), med(depth), med(onset), med(scoop),
                     float(np.mean((step > 10) & (step < 80) & voiced[1:])), med(jit), float(np.mean(voiced))])


def singer_expression(index_dir: Path, singers: list) -> np.ndarray:
    """(S, 7) singer means of :func:`expression_features` over the index's songs (audio read again)."""
    from data.audio import load_audio

    songs = pd.read_parquet(index_dir / "songs.parquet", columns=["path", "singer"])
    feats = pd.DataFrame([expression_features(load_audio(p)) for p in songs["path"]])
    feats["singer"] = songs["singer"].to_numpy()
    return feats.groupby("singer").mean().loc[singers].to_numpy()


def singer_table(index_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(ground truth rows in index singer order, singer timbre vectors (S, d)) of an index directory."""
    info = json.loads((index_dir / "index.json").read_text())
    gt = load_ground_truth(info)
    if gt is None:
        raise SystemExit(f"{index_dir}: its catalogue has no ground_truth/singers.csv")
    singers = pd.read_parquet(index_dir / "singers.parquet")["singer"]
    vecs = np.load(index_dir / "embeddings" / "singers_timbre.npy")
    gt = gt.set_index("singer").loc[singers].reset_index()
    return gt, vecs


def ndcg_by_distance(x: np.ndarray, names: list, truth: dict) -> float:
    """nDCG@K of ranking every singer's neighbours by Euclidean distance between rows of ``x``."""
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    row = {s: i for i, s in enumerate(names)}
    return ranking_ndcg(lambda s: [names[j] for j in np.argsort(d[row[s]], kind="stable")[:K]], truth, K)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-index", type=Path, default=Path("demo_data/index"),
                    help="index of the catalogue the encoders were trained on (the probe is fitted here)")
    ap.add_argument("--eval-index", type=Path, required=True, help="index of a catalogue of other singers")
    ap.add_argument("--expression", action="store_true",
                    help="also probe with prototype f0-contour features (reads every song again, ~1 min per 900)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
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
        vals = [ndcg_by_distance(z1 + sigma * rng.standard_normal(z1.shape), names, truth) for _ in range(5)]
        rows.append(f"| {sigma:.1f} | {1 / (1 + sigma ** 2):.2f} | {np.mean(vals):.3f} |")
    out.append("Ranking by the true standardised parameters plus Gaussian noise (mean of 5 draws):\n\n"
               "| noise sigma (per parameter, in its std) | R^2 it corresponds to | nDCG@10 |\n|---|---|---|\n"
               + "\n".join(rows))

    # 2. ridge probe from the timbre vectors
    probe = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(v0, y0)
    pred = probe.predict(v1)
    r2 = 1 - ((pred - y1) ** 2).mean(0) / y1.var(0)
    cos = v1 / np.linalg.norm(v1, axis=1, keepdims=True)
    ndcg_cos = ndcg_by_distance(cos, names, truth)  # Euclidean on unit vectors = cosine ranking
    ndcg_probe = ndcg_by_distance(pred, names, truth)
    r2_rows = "\n".join(f"| {c[2:]} | {v:.2f} |" for c, v in sorted(zip(cols, r2), key=lambda t: -t[1]))
    out.append(f"Singer timbre vectors of `{args.eval_index}` ({len(names)} singers) against their ground truth; "
               f"ridge probe (alpha {probe.alpha_:g}) fitted on the {len(gt0)} singers of `{args.train_index}`:\n\n"
               f"| ranking | nDCG@10 |\n|---|---|\n| cosine on singer timbre vectors | {ndcg_cos:.3f} |\n"
               f"| distance between probe-predicted parameters | {ndcg_probe:.3f} |\n\n"
               f"Per-parameter R^2 of the probe on the evaluation singers:\n\n| parameter | R^2 |\n|---|---|\n"
               f"{r2_rows}")

    # 3. perfect knowledge of the recovered parameters only
    good = r2 >= 0.5
    ndcg_good = ndcg_by_distance(z1[:, good], names, truth)
    out.append(f"Ranking by the *true* values of only the {int(good.sum())} parameters the probe recovers with "
               f"R^2 >= 0.5 ({', '.join(c[2:] for c, g in zip(cols, good) if g)}): nDCG@10 **{ndcg_good:.3f}**. "
               f"The other {int((~good).sum())} parameters (source and pitch-contour habits) carry the rest of the "
               f"ground-truth distance.")

    if args.expression:
        from sklearn.preprocessing import StandardScaler

        x0 = singer_expression(args.train_index, gt0["singer"].tolist())
        x1 = singer_expression(args.eval_index, names)
        sc = StandardScaler().fit(x0)
        probe2 = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(np.c_[v0, sc.transform(x0)], y0)
        pred2 = probe2.predict(np.c_[v1, sc.transform(x1)])
        r2b = 1 - ((pred2 - y1) ** 2).mean(0) / y1.var(0)
        rows = "\n".join(f"| {c[2:]} | {a:.2f} | {b:.2f} |" for c, a, b in
                         sorted(zip(cols, r2, r2b), key=lambda t: -(t[2] - t[1])))
        out.append(f"With {len(EXPRESSION)} prototype f0-contour features per song ({', '.join(EXPRESSION)}; "
                   f"singer means, standardised) appended to the timbre vectors, the same probe ranks at nDCG@10 "
                   f"**{ndcg_by_distance(pred2, names, truth):.3f}** (timbre vectors alone: {ndcg_probe:.3f}). "
                   f"R^2 per parameter, largest gain first:\n\n| parameter | timbre vectors | + f0-contour features |"
                   f"\n|---|---|---|\n{rows}")

    body = ("\n\n".join(out) + "\n\nReproduce: `python benchmarks/ndcg_analysis.py --train-index "
            f"{args.train_index} --eval-index {args.eval_index}{' --expression' if args.expression else ''}`")
    print(body)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", "Similar-singer ranking: what limits nDCG@10", body)


if __name__ == "__main__":
    main()
