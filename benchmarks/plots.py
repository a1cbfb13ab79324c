"""The pictures of BENCHMARKS.md and the README (matplotlib, written to ``docs/``).

Three pictures, one subcommand each:

- ``topk DEV``: singer retrieval on real singing (the MIR-1K dev folder with ``manifest.csv``: ``path, singer,
  song, gender``; its audio stays outside the repository). Every clip queries the others, the clips of its own
  song excluded; left: the share of queries whose k nearest clips (cosine) contain one by the same singer,
  k = 1..20; right: precision against recall (relevant = the singer's clips of other songs), averaged over
  queries. Representations: singrec's timbre song vectors (the ones the index stores), the MFCC-20 mean+std
  baseline (standardised over the clips) and the GE2E speaker part alone. The clips are indexed with the
  shipped weights into ``--work`` (~90 s), or an existing index of them is read with ``--index`` (never
  written). -> ``docs/real_topk.png`` (and the curves as JSON with ``--json``).
- ``throughput JSON``: embedding throughput per stage (3-min songs, one torch thread) from the JSON of
  ``python benchmarks/encoder_quality.py --parts throughput --threads 1 --json JSON``. -> ``docs/throughput.png``
- ``latency JSON``: p50 / p99 of ``similar_singers`` against catalogue size from the JSON of
  ``python benchmarks/query.py --sizes ... --json JSON``, plus the 1M-song figure of BENCHMARKS.md "Index and
  queries" (``MILLION``; ``benchmarks/query.py`` without ``--sizes`` measures it, ~10 min). -> ``docs/latency.png``

    python benchmarks/plots.py topk ../shared/realdev/mir1k --work /tmp/plots
    python benchmarks/plots.py throughput benchmarks/results/throughput.json
    python benchmarks/plots.py latency benchmarks/results/query.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs"
KS = np.arange(1, 21)
TARGET_X_REAL_TIME = 300
# the 1M-song row of BENCHMARKS.md "Index and queries" (IVF4096,Flat, 384-d / 128-d synthetic vectors)
MILLION = {"songs": 1_000_000, "p50_ms": 20.59, "p99_ms": 26.02, "commit": "b6d7544"}


# ---------------------------------------------------------------------------------------------- top-k


def ranked_relevance(emb: np.ndarray, singers: np.ndarray, songs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every query: the relevance (same singer) of its candidates in cosine order, and which queries have
    a relevant candidate. Candidates exclude the query and the clips of its own song (moved to the end and
    marked irrelevant). Returns (rel (N, N) bool, ok (N,) bool)."""
    x = np.asarray(emb, dtype=np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    drop = songs[:, None] == songs[None, :]  # includes the query itself
    sim[drop] = -np.inf
    order = np.argsort(-sim, axis=1, kind="stable")
    rel = (singers[order] == singers[:, None]) & ~np.take_along_axis(drop, order, axis=1)
    return rel, rel.any(1)


def topk_curve(rel: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Share of queries with a relevant item among their first k candidates, k in ``KS``."""
    first = np.argmax(rel[ok], axis=1)  # rank of the first same-singer clip (0-based)
    return np.array([(first < k).mean() for k in KS])


def pr_curve(rel: np.ndarray, ok: np.ndarray, levels: np.ndarray = np.linspace(0, 1, 21)) -> tuple[np.ndarray, float]:
    """Interpolated precision at recall ``levels`` averaged over queries, and mAP (as ``recsys.evaluate``)."""
    rel = rel[ok]
    hits = np.cumsum(rel, axis=1)
    n_rel = rel.sum(1, keepdims=True)
    precision = hits / np.arange(1, rel.shape[1] + 1)[None, :]
    recall = hits / n_rel
    ap = float(((precision * rel).sum(1) / n_rel[:, 0]).mean())
    # interpolated precision: the best precision at any recall >= the level
    best = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    curve = [np.mean([best[q, np.searchsorted(recall[q], r)] for q in range(len(rel))]) for r in levels]
    return np.array(curve), ap


def clip_vectors(dev: Path, index_dir: Path | None, work: Path) -> tuple[pd.DataFrame, dict]:
    """The clips (the index's songs table) and their vectors per representation, in the same row order."""
    from data.audio import load_audio
    from encoders.speaker import speaker_vectors
    from recsys.evaluate import mfcc_song_vectors

    manifest = dev / "manifest.csv"
    if index_dir is None:
        from index.build import build_catalogue_index

        index_dir = work / "index-clips"
        build_catalogue_index(manifest, index_dir, progress=True)
    from index.store import current_snapshot

    snap = current_snapshot(index_dir)  # the published snapshot's files
    info = json.loads((snap / "index.json").read_text())
    print(f"index {snap}: timbre checkpoint sha256 {info['encoders']['timbre']['sha256'][:12]}")
    rows = pd.read_parquet(snap / "songs.parquet")  # path (absolute), singer, song, ... in vector order
    paths = rows["path"].tolist()
    vectors = {"singrec timbre vectors": np.load(snap / "embeddings" / "songs_timbre.npy"),
               "MFCC-20 mean+std": mfcc_song_vectors(paths),
               "GE2E speaker part alone": speaker_vectors([load_audio(p) for p in paths])}
    return rows, vectors


def plot_topk(args) -> None:
    dev = args.dev.resolve()
    if args.from_json:
        curves = json.loads(args.from_json.read_text())
    else:
        rows, vectors = clip_vectors(dev, args.index, args.work)
        singers, songs = rows["singer"].to_numpy(), rows["song"].to_numpy()
        curves = {"k": KS.tolist(), "recall_levels": np.linspace(0, 1, 21).tolist(), "clips": len(rows),
                  "singers": int(rows["singer"].nunique()), "songs": int(rows["song"].nunique()), "curves": {}}
        for name, emb in vectors.items():
            rel, ok = ranked_relevance(emb, singers, songs)
            pr, ap = pr_curve(rel, ok)
            curves["curves"][name] = {"topk": topk_curve(rel, ok).tolist(), "precision": pr.tolist(), "map": ap,
                                      "queries": int(ok.sum())}
            print(f"{name}: top-1 {curves['curves'][name]['topk'][0]:.3f}, top-5 "
                  f"{curves['curves'][name]['topk'][4]:.3f}, top-20 {curves['curves'][name]['topk'][-1]:.3f}, "
                  f"mAP {ap:.3f} ({int(ok.sum())} queries)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(curves, indent=1))
            print(f"wrote {args.json}")

    styles = {"singrec timbre vectors": ("C0", "-", "o"), "GE2E speaker part alone": ("C2", "--", "s"),
              "MFCC-20 mean+std": ("C3", ":", "^")}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in ("singrec timbre vectors", "GE2E speaker part alone", "MFCC-20 mean+std"):
        c = curves["curves"][name]
        colour, line, marker = styles[name]
        ax1.plot(curves["k"], c["topk"], color=colour, ls=line, marker=marker, ms=4, lw=2,
                 label=f"{name} (top-1 {c['topk'][0]:.3f})")
        ax2.plot(curves["recall_levels"], c["precision"], color=colour, ls=line, marker=marker, ms=4, lw=2,
                 label=f"{name} (mAP {c['map']:.3f})")
    ax1.set(xlabel="k (nearest clips of other songs)", ylabel="share of queries with a same-singer clip in top k",
            title="Singer found within the k nearest clips", xticks=[1, 2, 5, 10, 15, 20], xlim=(0.5, 20.5))
    lo = min(min(c["topk"]) for c in curves["curves"].values())
    ax1.set_ylim(max(0.0, np.floor(lo * 20) / 20 - 0.02), 1.005)
    ax2.set(xlabel="recall (share of the singer's clips of other songs found)",
            ylabel="precision (interpolated, mean over queries)", title="Precision against recall",
            xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax1 else "lower left", fontsize=9)
    queries = next(iter(curves["curves"].values()))["queries"]
    fig.suptitle(f"Singer retrieval on real singing: MIR-1K, {curves['clips']} clips of {curves['songs']} songs by "
                 f"{curves['singers']} singers\nthe {queries} clips whose singer has another song query the rest, "
                 f"their own song's clips excluded", fontsize=10.5)
    fig.tight_layout()
    save(fig, args.out)


# ---------------------------------------------------------------------------------------------- throughput


def plot_throughput(args) -> None:
    data = json.loads(args.json_in.read_text())
    stages = data["stages"]
    names = list(stages)
    end = [n for n in names if n.startswith("end to end")]
    names = end + sorted([n for n in names if n not in end], key=lambda n: stages[n]["x_real_time"])  # top down
    xrt = [stages[n]["x_real_time"] for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    colours = ["C1" if n in end else "C0" for n in names]
    bars = ax.barh(range(len(names)), xrt, color=colours)
    for bar, n in zip(bars, names):
        ax.text(bar.get_width() * 1.04, bar.get_y() + bar.get_height() / 2,
                f"{stages[n]['x_real_time']:.0f}x ({stages[n]['s_per_song']:.3f} s per song)", va="center",
                fontsize=9)
    ax.axvline(TARGET_X_REAL_TIME, color="C3", ls="--", lw=1.5)
    ax.text(TARGET_X_REAL_TIME * 1.04, len(names) - 0.45, f"target: end to end >= {TARGET_X_REAL_TIME}x",
            color="C3", fontsize=9, va="center")
    ax.set_xscale("log")
    ax.set_xlim(100, max(xrt) * 6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([n.replace(" (embed_songs)", "").replace("end to end: ", "end to end:\n") for n in names],
                       fontsize=9)
    ax.set_ylim(len(names) - 0.2, -0.7)  # the first name on top
    ticks = [100, 300, 1000, 3000, 10000, 30000]
    ax.set_xticks(ticks, [f"{t}x" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("x real time (seconds of audio per second of one core; log scale, higher is faster)")
    ax.set_title(f"Embedding throughput per stage: 3-min songs, {data['threads']} torch thread, "
                 f"commit {data['commit']}", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, args.out)


# ---------------------------------------------------------------------------------------------- latency


def plot_latency(args) -> None:
    data = json.loads(args.json_in.read_text())
    rows = sorted(data["rows"], key=lambda r: r["songs"])
    n = [r["songs"] for r in rows]
    load = data.get("load", [float("nan")])[0]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for target, text in ((10.0, "target: p99 <= 10 ms on the default catalogue (900 songs)"),
                         (50.0, "target: p99 <= 50 ms at 1M songs")):
        ax.axhline(target, color="C3", ls="--", lw=1.2)
        below = target < 20  # the 10-ms label goes under its line, clear of the 1M points
        ax.text(3.2e5, target / 1.06 if below else target * 1.06, text, color="C3", fontsize=8,
                va="top" if below else "bottom", ha="center")
    for i, (key, colour, marker) in enumerate((("p50_ms", "C0", "o"), ("p99_ms", "C1", "s"))):
        y = [r[key] for r in rows]
        ax.plot(n, y, color=colour, marker=marker, lw=2,
                label=f"{key[:3]}, measured: Flat index, median of {data.get('repeats', 1)} x {data['queries']} "
                      f"queries")
        if data.get("repeats", 1) > 1:
            lo = [min(run[i] for run in r["runs_ms"]) for r in rows]
            hi = [max(run[i] for run in r["runs_ms"]) for r in rows]
            ax.fill_between(n, lo, hi, color=colour, alpha=0.15, lw=0)
        ax.plot([n[-1], MILLION["songs"]], [y[-1], MILLION[key]], color=colour, ls=":", lw=1.2)
        ax.plot([MILLION["songs"]], [MILLION[key]], color=colour, marker=marker, ms=9, mfc="white", mew=2,
                ls="none", label=f"{key[:3]} at 1M songs: IVF4096,Flat, quiet machine (BENCHMARKS.md, commit "
                                 f"{MILLION['commit']})")
        for x, v in list(zip(n, y)) + [(MILLION["songs"], MILLION[key])]:
            ax.annotate(f"{v:.1f}", (x, v), textcoords="offset points", xytext=(0, 8 if i else -14),
                        ha="center", fontsize=8, color=colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n[0] / 2, MILLION["songs"] * 2)
    ax.set_ylim(0.5, 100)
    xt = [1000, 10_000, 100_000, 1_000_000]
    ax.set_xticks(xt, ["1k", "10k", "100k", "1M"])
    yt = [0.5, 1, 2, 5, 10, 20, 50, 100]
    ax.set_yticks(yt, [f"{t:g}" for t in yt])
    ax.minorticks_off()
    ax.set_xlabel("catalogue size (songs, 30 per singer; log scale)")
    ax.set_ylabel("similar_singers(k=10) latency (ms, log scale)")
    ax.set_title(f"Similar-singer query latency against catalogue size\nsynthetic 384-d timbre + 128-d melody "
                 f"vectors, one thread; commit {data['commit']}, 2 shared cores, load {load:.1f} at the end\n"
                 f"bands: range over the repeats", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save(fig, args.out)


# ---------------------------------------------------------------------------------------------- main


def save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def plot_scale(args) -> None:
    """Build time and query p99 against catalogue size, from ``scale.py --json`` (the 10^7 build time on paper)."""
    data = json.loads(args.json_in.read_text())
    rows = sorted(data["rows"], key=lambda r: r["songs"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    n = [r["songs"] for r in rows]
    a.plot(n, [max(r["build_s"], 0.1) for r in rows], "o-", color="C0", lw=2, label="measured (both song indexes)")
    a.plot([n[-1], data["paper"]["songs"]], [rows[-1]["build_s"], data["paper"]["build_s"]], "o:", color="C0",
           mfc="white", label=f"10^7 on paper ({data['paper']['key']})")
    for r in rows:
        a.annotate(f"{r['key']}\n{r['build_s']:.0f} s, peak {r['peak_gb']:.1f} GB", (r["songs"], max(r["build_s"], 0.1)),
                   textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    a.set(xscale="log", yscale="log", xlabel="songs (log scale)", ylabel="build seconds (log scale)",
          title="Building the song indexes (--index-key auto)")
    b.plot(n, [r["p99_ms"] for r in rows], "s-", color="C1", lw=2, label="p99")
    b.plot(n, [r["p50_ms"] for r in rows], "o-", color="C0", lw=2, label="p50")
    b.axhline(50, color="C3", ls="--", lw=1.2, label="target at 1M songs: p99 <= 50 ms")
    for r in rows:
        b.annotate(f"recall@10 {r['recall']['timbre']:.3f}", (r["songs"], r["p99_ms"]), textcoords="offset points",
                   xytext=(0, 8), ha="center", fontsize=8)
    b.set(xscale="log", ylim=(0, 60), xlabel="songs (log scale)", ylabel="similar_singers latency (ms)",
          title="Query latency")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"singrec at catalogue scale: synthetic 384-d / 128-d vectors, commit {data['commit']}, "
                 f"2 cores, load {data['load'][0]:.1f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="picture", required=True)
    p = sub.add_parser("topk", help="singer retrieval on MIR-1K -> docs/real_topk.png")
    p.add_argument("dev", type=Path, help="the MIR-1K dev folder (with manifest.csv)")
    p.add_argument("--index", type=Path, default=None, help="an existing index of the clips (read only)")
    p.add_argument("--work", type=Path, default=Path("/tmp/singrec-plots"), help="where to index the clips")
    p.add_argument("--json", type=Path, default=None, help="also write the curves here")
    p.add_argument("--from-json", type=Path, default=None, help="plot curves written by --json (no computing)")
    p.add_argument("--out", type=Path, default=DOCS / "real_topk.png")
    p.set_defaults(fn=plot_topk)
    # the pictures drawn from a benchmark's JSON: (name -> docs/<name>.png, function, what it shows, what writes the JSON)
    for name, fn, what, source in (
            ("throughput", plot_throughput, "embedding throughput per stage", "encoder_quality.py --parts throughput --json"),
            ("latency", plot_latency, "query latency against catalogue size", "query.py --json"),
            ("scale", plot_scale, "build time and query p99 against catalogue size", "scale.py --json")):
        p = sub.add_parser(name, help=f"{what} -> docs/{name}.png")
        p.add_argument("json_in", type=Path, help=f"written by {source}")
        p.add_argument("--out", type=Path, default=DOCS / f"{name}.png")
        p.set_defaults(fn=fn)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
