"""Similar-singer query latency and approximate-index recall.

1. The default catalogue's index (``demo_data/index`` after ``make demo``, or --index): p50/p99 latency of
   ``similar_singers`` for every singer as the query, several rounds.
2. A 60k-song (2,000 singers) and a 1M-song index of synthetic vectors (clustered like real embeddings:
   singers' songs scattered around a singer centre), with the index ``auto`` picks at each size (Flat, IVF):
   song-level recall@10 of the index vs exact search, singer-level overlap of ``similar_singers`` top-10
   with an exact ranker (Flat song indexes, every singer scored exactly), and p50/p99 query latency.
   Prints a markdown table; ``--json`` also writes the rows (read by ``benchmarks/plots.py``).

Run: ``.venv/bin/python benchmarks/query.py [--index demo_data/index] [--songs 1000000]``
     ``.venv/bin/python benchmarks/query.py --sizes 900,3000,10000,30000,60000 --queries 1000 --repeats 5``
     ``--json benchmarks/results/query.json``
(``--sizes`` replaces ``--mid-songs`` and ``--songs``: only those synthetic sizes, e.g. without the 1M one).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from encoders.base import l2_normalise, set_torch_threads
from index.faiss_index import build_index, build_song_index, choose_index_key, recall_at_k, search
from recsys.rank import Recommender


def latency(rec: Recommender, queries: list, rounds: int = 3, k: int = 10) -> tuple[float, float]:
    for q in queries[:5]:
        rec.similar_singers(q, k=k)  # warm-up
    times = []
    for _ in range(rounds):
        for q in queries:
            t0 = time.perf_counter()
            rec.similar_singers(q, k=k)
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 99))


SHIPPED_DIMS = (384, 128)  # timbre (GE2E 256 + TDNN 128, encoders/timbre.py), melody: the shipped checkpoints' dims


def synthetic_recommender(n_songs: int, songs_per_singer: int, dims=SHIPPED_DIMS, seed: int = 0,
                          index_key: str = "auto", built: dict | None = None,
                          index_memory: str | int | None = None) -> Recommender:
    """A Recommender over clustered random unit vectors (no audio), for scale tests. With ``built`` (a dict), the
    song indexes come from ``build_song_index`` (within ``index_memory``, nprobe tuned) and ``built[kind]`` gets
    its info plus the build seconds."""
    rng = np.random.default_rng(seed)
    n_singers = -(-n_songs // songs_per_singer)
    owner = np.repeat(np.arange(n_singers), songs_per_singer)[:n_songs]
    names = np.array([f"s{i:06d}" for i in range(n_singers)])
    vecs, singer_vecs, indexes = {}, {}, {}
    for kind, d in zip(("timbre", "melody"), dims):
        centres = l2_normalise(rng.standard_normal((n_singers, d)).astype(np.float32))
        x = centres[owner] + 0.6 / np.sqrt(d) * rng.standard_normal((n_songs, d)).astype(np.float32)
        vecs[kind] = l2_normalise(x)
        sums = np.zeros((n_singers, d), np.float32)
        np.add.at(sums, owner, vecs[kind])
        singer_vecs[kind] = l2_normalise(sums)
        t0 = time.perf_counter()
        if built is None:
            indexes[kind] = build_index(vecs[kind], index_key)
        else:
            indexes[kind], built[kind] = build_song_index(vecs[kind], index_key, max_memory=index_memory)
            built[kind]["seconds"] = time.perf_counter() - t0
        name = built[kind]["factory"] if built is not None else (
            index_key if index_key != "auto" else choose_index_key(n_songs))
        print(f"  built {kind} index {name} over {n_songs} x {d} in {time.perf_counter() - t0:.0f} s", flush=True)
    songs = pd.DataFrame({"song_id": [f"{names[o]}/{i}" for i, o in enumerate(owner)], "singer": names[owner]})
    singers = pd.DataFrame({"singer": names, "n_songs": np.bincount(owner, minlength=n_singers)})
    map_df = pd.DataFrame({"kind": "song", "id": songs["song_id"], "singer": songs["singer"], "x": 0.0, "y": 0.0,
                           "cluster": 0})
    info = {"counts": {"songs": n_songs, "singers": n_singers}, "faiss": {"songs": index_key}, "dims": {}}
    return Recommender(Path("<memory>"), info, songs, singers, map_df, vecs, singer_vecs, indexes, pd.DataFrame())


def synthetic_row(n_songs: int, songs_per_singer: int, n_queries: int, repeats: int = 1,
                  index_memory: str | None = None) -> tuple:
    """Latency, song recall@10 and singer top-10 overlap for a synthetic index of ``n_songs`` vectors.

    The reference ranker searches exact (Flat) song indexes and scores *every* singer exactly (no candidate
    cut), so the overlap measures all approximations at once: the IVF index, the candidate singers and the
    rescoring budget. With ``index_memory`` the song indexes are built as ``singrec index`` builds them
    (``build_song_index``: the key ``auto`` picks within that budget, nprobe tuned). With ``repeats`` > 1 the latency is timed that many times (after the index is built) and
    the medians of the p50s and of the p99s are reported; the last element lists every (p50, p99).
    """
    print(f"building the {n_songs}-song synthetic index ...", flush=True)
    built = {} if index_memory else None
    approx = synthetic_recommender(n_songs, songs_per_singer, built=built, index_memory=index_memory)
    key = choose_index_key(n_songs)
    if built:
        key = built["timbre"]["factory"] + (f", nprobe {built['timbre']['nprobe']}" if "nprobe" in built["timbre"] else "")
    rng = np.random.default_rng(1)
    qrows = rng.choice(n_songs, min(n_queries, n_songs), replace=False)
    exact_index = build_index(approx.song_vectors["timbre"], "Flat")
    q = approx.song_vectors["timbre"][qrows]
    song_recall = recall_at_k(search(approx.song_indexes["timbre"], q, 10)[1], search(exact_index, q, 10)[1], 10)
    exact = Recommender(approx.index_dir, approx.info, approx.songs, approx.singers, approx.map,
                        approx.song_vectors, approx.singer_vectors,
                        {"timbre": exact_index, "melody": build_index(approx.song_vectors["melody"], "Flat")},
                        pd.DataFrame())
    n_singers = len(approx.singers)
    singers = approx.singers["singer"].to_numpy()[rng.choice(n_singers, min(50, n_singers), replace=False)].tolist()
    exact.exact_singers = len(approx.singers)  # the reference: every singer scored exactly
    reference = {s: set(exact.similar_singers(s, k=10)["singer"]) for s in singers}
    overlap = np.mean([len(set(approx.similar_singers(s, k=10)["singer"]) & reference[s]) / 10 for s in singers])
    picks = rng.choice(n_singers, min(n_queries, n_singers), replace=False)
    query_singers = approx.singers["singer"].to_numpy()[picks]
    # small catalogues have fewer singers than queries: more rounds, so every size times ~n_queries queries
    runs = [latency(approx, query_singers.tolist(), rounds=-(-n_queries // len(picks))) for _ in range(repeats)]
    p50, p99 = (float(np.median([r[i] for r in runs])) for i in (0, 1))
    return ("synthetic vectors", f"{n_songs} songs / {len(approx.singers)} singers", key,
            f"{song_recall:.3f}", f"{overlap:.3f}", p50, p99, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("demo_data/index"))
    ap.add_argument("--songs", type=int, default=1_000_000)
    ap.add_argument("--mid-songs", type=int, default=60_000,
                    help="also a mid-size synthetic catalogue (exact FAISS, above EXACT_SINGERS); 0 to skip")
    ap.add_argument("--songs-per-singer", type=int, default=30)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated synthetic catalogue sizes in songs (instead of --mid-songs, --songs)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each synthetic size this many times and report the median p50 / p99 (steadier on "
                         "a shared machine)")
    ap.add_argument("--index-memory", default=None,
                    help="build the synthetic song indexes within this budget as `singrec index --index-memory` "
                         "does (e.g. 1G: a compressed index at 1M songs); default: the key `auto` picks by size")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    set_torch_threads()
    rows = []
    if (args.index / "CURRENT").is_file():
        rec = Recommender.load(args.index)
        p50, p99 = latency(rec, rec.singers["singer"].tolist())
        rows.append(("default catalogue", f"{len(rec.songs)} songs / {len(rec.singers)} singers",
                     rec.info["faiss"]["songs"], "1.000 (exact)", "1.000 (exact)", p50, p99, [(p50, p99)]))
    else:
        print(f"(no index at {args.index}; run `make demo` first for the default-catalogue row)")

    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.mid_songs, args.songs]
    for n_songs in [n for n in sizes if n]:
        rows.append(synthetic_row(n_songs, args.songs_per_singer, args.queries, args.repeats, args.index_memory))
    print("\n| index | size | FAISS | song recall@10 vs exact | singer top-10 overlap vs exact | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, size, key, rec10, ov, p50, p99, _ in rows:
        print(f"| {name} | {size} | {key} | {rec10} | {ov} | {p50:.2f} | {p99:.2f} |")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "rows": [{"index": name, "size": size, "songs": int(size.split()[0].replace(",", "")), "faiss": key,
                      "song_recall@10": rec10, "singer_overlap@10": ov, "p50_ms": p50, "p99_ms": p99,
                      "runs_ms": runs}
                     for name, size, key, rec10, ov, p50, p99, runs in rows],
            "commit": commit, "load": os.getloadavg(), "queries": args.queries, "repeats": args.repeats}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
