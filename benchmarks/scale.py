"""Song indexes at catalogue scale: synthetic vectors for 10^5 and 10^6 songs, and 10^7 on paper.

Each size runs in its own process (so the peak memory is that size's): clustered unit vectors as in
``benchmarks/query.py`` (the shipped dims: 384-d timbre, 128-d melody; 30 songs a singer), both song indexes built by
``build_song_index`` with ``--index-key auto`` under ``--index-memory`` (the key, nprobe tuned to recall@10 >= 0.95
against exact search on 500 held-out songs), then ``similar_singers`` p50 / p99 over ``--queries`` singers.
Reports build seconds, peak RSS, the serialized index size, recall@10 and latency; the 10^7 row is computed from
the largest measured size: the key ``choose_index_key`` picks for 10^7 within the budget, its size from the key
(floats or PQ codes, plus an 8-byte id a vector), and the build time scaled by the song count (adding shards of
100k vectors costs the same per shard; a compressed key's training adds to it).

Run: ``.venv/bin/python benchmarks/scale.py [--sizes 100000,1000000] [--index-memory auto]``
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_size(n: int, queries: int, index_memory: str) -> dict:
    import faiss

    from benchmarks.query import latency, synthetic_recommender
    from encoders.base import set_torch_threads

    set_torch_threads()
    built: dict = {}
    rec = synthetic_recommender(n, 30, built=built, index_key="auto", index_memory=index_memory)
    singers = rec.singers["singer"].sample(min(queries, len(rec.singers)), random_state=0).tolist()
    p50, p99 = latency(rec, singers, rounds=1)
    size = sum(int(faiss.serialize_index(rec.song_indexes[k]).nbytes) for k in built)
    return {"songs": n, "key": built["timbre"]["factory"], "nprobe": built["timbre"].get("nprobe"),
            "build_s": sum(b["seconds"] for b in built.values()),
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "index_gb": size / 1e9,
            "recall": {k: b["recall_at_10"] for k, b in built.items()}, "p50_ms": p50, "p99_ms": p99}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index-memory", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (plots.py scale reads them)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_size(args.one, args.queries, args.index_memory)), flush=True)
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--one", str(n), "--queries",
                              str(args.queries), "--index-memory", args.index_memory], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]))
        print(rows[-1], flush=True)
    from index.faiss_index import choose_index_key, parse_memory

    big, n7 = rows[-1], 10_000_000
    sys.path.insert(0, str(ROOT))  # run as a script: the repo root is not on the path
    from benchmarks.query import SHIPPED_DIMS

    keys = {d: choose_index_key(n7, d, parse_memory(args.index_memory)) for d in SHIPPED_DIMS}
    pq = {d: re.search(r"PQ(\d+)x(\d+)", k) for d, k in keys.items()}  # bytes a vector: PQ codes, else floats
    gb = sum(n7 * ((int(m[1]) * int(m[2]) // 8) if m else 4 * d) + 8 * n7 for d, m in pq.items()) / 1e9
    paper = {"songs": n7, "key": keys[SHIPPED_DIMS[0]], "build_s": big["build_s"] * n7 / big["songs"], "index_gb": gb}
    print("| songs | key (timbre) | build s (both) | peak memory GB | index GB | recall@10 timbre / melody "
          "| p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        probe = f" (nprobe {r['nprobe']})" if r["nprobe"] else ""
        print(f"| {r['songs']:,} | {r['key']}{probe} | {r['build_s']:.0f} | {r['peak_gb']:.2f} "
              f"| {r['index_gb']:.2f} | {r['recall']['timbre']:.3f} / {r['recall']['melody']:.3f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    print(f"| {n7:,} (on paper) | {paper['key']} | ~{paper['build_s']:.0f} | - | ~{paper['index_gb']:.1f} "
          "| - | - | - |")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "paper": paper, "commit": commit,
                                         "load": list(os.getloadavg())}, indent=1))


if __name__ == "__main__":
    main()
