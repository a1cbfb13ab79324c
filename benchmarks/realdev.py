"""Quality on real singing: index the MIR-1K dev set (clips, and whole songs) and evaluate it.

The dev set stays outside the repository (research-use licence; never commit its audio): pass its folder, the
one with ``manifest.csv`` (``path, singer, song, gender, ...``). Two catalogues are built under ``--work``:

- **clips**: the 1000 clips as they are (the ``song`` column groups the clips of one recording, so a query's
  own song is never a candidate: its clips share take, room and tune);
- **songs**: each song's clips joined in order into one file (110 songs).

Each is indexed with ``singrec index`` (shipped weights unless ``--checkpoints``) and evaluated with
``singrec evaluate --agree gender --baseline``: singer top-1 / mAP of the timbre song vectors the index stores,
own song excluded, the MFCC-20 baseline beside it, and the share of each singer's top-k similar singers that
share its gender (default ranking, and timbre only). ``--write`` puts the table into BENCHMARKS.md between the
``realdev`` markers.

Run: ``.venv/bin/python benchmarks/realdev.py ../shared/realdev/mir1k --work /tmp/realdev [--write]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from index.build import build_catalogue_index
from recsys.evaluate import evaluate_index

BEGIN, END = "<!-- realdev:begin -->", "<!-- realdev:end -->"


def joined_songs(dev: Path, out: Path) -> Path:
    """Write each song's clips, joined in path order, as ``out/audio/<singer>/<song>.flac``; returns the
    manifest (``path, singer, song, gender``). Reuses files already written."""
    man = pd.read_csv(dev / "manifest.csv")
    rows = []
    for song, g in man.sort_values("path").groupby("song", sort=True):
        path = out / "audio" / g["singer"].iloc[0] / f"{song}.flac"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = [sf.read(dev / p, dtype="float32") for p in g["path"]]
            sf.write(path, np.concatenate([a for a, _ in audio]), audio[0][1])
        rows.append({"path": str(path.relative_to(out)), "singer": g["singer"].iloc[0], "song": song,
                     "gender": g["gender"].iloc[0]})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def run(manifest: Path, index_dir: Path, checkpoints: Path | None, k: int) -> tuple[dict, float]:
    """Index (from scratch) and evaluate one catalogue; returns (metrics, indexing seconds)."""
    t0 = time.perf_counter()
    build_catalogue_index(manifest, index_dir, checkpoints=checkpoints, progress=True)
    seconds = time.perf_counter() - t0
    return evaluate_index(index_dir, k=k, agree=["gender"], baseline=True), seconds


def weight_sweep(index_dir: Path, k: int, weights=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> str:
    """Agreement on gender of the similar-singer lists for several timbre weights (how the default is chosen)."""
    from recsys.evaluate import agreement_at_k, singer_values
    from recsys.rank import Recommender

    rec = Recommender.load(index_dir)
    values = singer_values(rec, "gender")
    cells = [agreement_at_k(lambda s: rec.similar_singers(s, k=k, timbre_weight=w)["singer"].tolist(), values, k)
             for w in weights]
    return (f"| timbre weight | {' | '.join(f'{w:.1f}' for w in weights)} |\n|---|{'---|' * len(weights)}\n"
            f"| share of top-{k} with the singer's gender | {' | '.join(f'{c:.3f}' for c in cells)} |")


def table(results: dict, k: int) -> str:
    """The markdown table of both catalogues."""
    def f(x):
        return f"{x:.3f}"

    lines = ["| measure (MIR-1K, own song excluded) | clips (1000) | whole songs (110) |", "|---|---|---|"]
    c, s = results["clips"], results["songs"]
    lines.append(f"| singrec timbre vectors: singer top-1 / mAP | **{f(c['timbre_singer_top1'])} / "
                 f"{f(c['timbre_singer_map'])}** | **{f(s['timbre_singer_top1'])} / {f(s['timbre_singer_map'])}** |")
    lines.append(f"| MFCC-20 mean+std baseline: singer top-1 / mAP | {f(c['mfcc_singer_top1'])} / "
                 f"{f(c['mfcc_singer_map'])} | {f(s['mfcc_singer_top1'])} / {f(s['mfcc_singer_map'])} |")
    for key, label in ((f"agree@{k}_gender", "default ranking"), (f"agree@{k}_gender_timbre_only", "timbre only"),
                       (f"agree@{k}_gender_mfcc", "MFCC singer centroids")):
        lines.append(f"| similar singers, {label}: share of top-{k} with the singer's gender | {f(c[key])} | "
                     f"{f(s[key])} |")
    lines.append(f"| melody vectors: singer top-1 (low = melody carries little of the voice) | "
                 f"{f(c['melody_singer_top1'])} | {f(s['melody_singer_top1'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dev", type=Path, help="the MIR-1K dev folder (with manifest.csv)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/singrec-realdev"))
    ap.add_argument("--checkpoints", type=Path, default=None, help="timbre.pt / melody.pt folder (default: shipped)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the metrics as JSON here")
    ap.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = ap.parse_args()
    dev, work = args.dev.resolve(), args.work.resolve()
    results, seconds = {}, {}
    results["clips"], seconds["clips"] = run(dev / "manifest.csv", work / "index-clips", args.checkpoints, args.k)
    songs = joined_songs(dev, work / "songs")
    results["songs"], seconds["songs"] = run(songs, work / "index-songs", args.checkpoints, args.k)
    text = table(results, args.k) + "\n\nChoosing the default timbre weight (clips):\n\n" + weight_sweep(
        work / "index-clips", args.k)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    where = (f"Commit {commit}, {platform.machine()} with {os.cpu_count()} cores (load {load}); "
             f"`python benchmarks/realdev.py DEV --work W`; indexing {seconds['clips']:.0f} s (clips) and "
             f"{seconds['songs']:.0f} s (songs), one torch thread.")
    print(text)
    print(where)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "seconds": seconds, "commit": commit}, indent=1))
    if args.write:
        bench = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
        doc = bench.read_text()
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{bench} has no {BEGIN} ... {END} section to replace")
        head, rest = doc.split(BEGIN, 1)
        bench.write_text(head + BEGIN + "\n" + text + "\n\n" + where + "\n" + END + rest.split(END, 1)[1])
        print(f"wrote the table into {bench}")


if __name__ == "__main__":
    main()
