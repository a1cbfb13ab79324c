"""Synthesis speed of the synthetic catalogue, in x real time on one core.

Renders the first songs of the default catalogue plan (same singers, melodies and recording chains as
``synthesize_catalogue``) in this single process, a few times, and prints the median speed of the
voice + chain rendering alone and with the FLAC encoding and write. Speed is given both from wall-clock time
and from the process CPU time (the latter does not depend on what else runs on the machine).

    python benchmarks/synth_speed.py [--songs 24] [--seconds 10] [--runs 3]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: numpy/scipy FFTs are single-threaded anyway

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import synth  # noqa: E402
from data.audio import save_audio  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=24, help="songs rendered per run")
    ap.add_argument("--seconds", type=float, default=synth.DEFAULT_SECONDS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    singers = synth.sample_singers(synth.DEFAULT_SINGERS, synth._rng(args.seed, 1))
    melodies = synth.make_melodies(synth._n_melodies(synth.DEFAULT_SINGERS, synth.DEFAULT_SONGS),
                                   synth._rng(args.seed, 2))
    plan = synth.plan_catalogue(singers, melodies, synth.DEFAULT_SONGS, args.seed).iloc[:args.songs]
    by_id = {m.melody_id: m for m in melodies}
    chain_cols = [c for c in plan.columns if c.startswith("chain_")]
    audio = args.songs * args.seconds

    synth.synthesize_song(singers.iloc[0], melodies[0], key=60, tempo=100, chain_params=None, seconds=2.0,
                          rng=np.random.default_rng(0))  # warm-up (imports, FFT plans)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {(stage, clock): [] for stage in ("render", "total") for clock in clocks}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            spent = {key: 0.0 for key in times}
            for r in plan.itertuples(index=False):
                t0 = {c: f() for c, f in clocks.items()}
                y = synth.synthesize_song(singers.iloc[r.singer_idx], by_id[r.melody_id], key=r.key, tempo=r.tempo,
                                          chain_params={c[6:]: getattr(r, c) for c in chain_cols},
                                          seconds=args.seconds, rng=synth._rng(args.seed, 4, r.singer_idx, r.song_idx))
                t1 = {c: f() for c, f in clocks.items()}
                save_audio(Path(tmp) / "song.flac", y, subtype="PCM_16")
                t2 = {c: f() for c, f in clocks.items()}
                for c in clocks:
                    spent["render", c] += t1[c] - t0[c]
                    spent["total", c] += t2[c] - t0[c]
            for key in times:
                times[key].append(spent[key])
    default_audio = synth.DEFAULT_SINGERS * synth.DEFAULT_SONGS * synth.DEFAULT_SECONDS
    print(f"{args.songs} songs x {args.seconds:g} s = {audio:.0f} s of audio, median of {args.runs} runs, "
          f"one process; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(f"{'stage':<22} {'clock':<5} {'seconds':>8} {'x real time':>12} {'default catalogue (s)':>22}")
    for (stage, clock), ts in times.items():
        t = float(np.median(ts))
        name = {"render": "render (voice + chain)", "total": "render + FLAC write"}[stage]
        print(f"{name:<22} {clock:<5} {t:8.2f} {audio / t:12.0f} {default_audio * t / audio:22.1f}")


if __name__ == "__main__":
    main()
