"""(Not named encoders.py: a script of that name in benchmarks/ would shadow the encoders package.)

Encoder benchmark: held-out singer retrieval, melody retrieval, cross-leakage, the pair-policy ablation and
embedding throughput. Prints markdown tables (``--write``: also replaces the "Encoders" section of BENCHMARKS.md).

Held-out evaluation: the encoders are trained on the default synthetic catalogue with seed 0; they are
evaluated on the default-size catalogue with seed 1 -- other singers, other melodies, other recording
chains. Every song is a query against all other songs (the song itself excluded):

* singer top-1 / mAP: nearest other song by the same singer / average precision of same-singer songs;
* melody mAP: relevant = the same ``melody_id`` sung by *other* singers (same-singer songs removed);
* cross-leakage: melody mAP of the timbre vectors and singer top-1 of the melody vectors (both should be low).

Ablation: the timbre encoder is trained with the same budget (same epochs, steps, anchor songs, seed, model)
for pitch x stretch in {pos, neg}^2 and none/none, and evaluated the same way.

Throughput: x real time of (a) the timbre encoder from log-mel, (b) the melody encoder from decoded audio,
(c) end to end from audio files (decode + log-mel + both encoders, ``encoders.embed.embed_songs``), on
3-minute FLAC songs assembled from catalogue audio.

    python benchmarks/encoder_quality.py                      # everything (the ablation trains 5 small models)
    python benchmarks/encoder_quality.py --parts eval,throughput   # without the ablation
    python benchmarks/encoder_quality.py --timbre out/run/timbre.pt --ablation-epochs 8
    python benchmarks/encoder_quality.py --parts throughput --threads 1 --json benchmarks/results/throughput.json
                                                              # the figures of docs/throughput.png (plots.py)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data.audio import load_audio, save_audio  # noqa: E402
from data.catalogue import Catalogue  # noqa: E402
from data.features import log_mel  # noqa: E402
from data.synth import synthesize_catalogue  # noqa: E402
from encoders.base import set_torch_threads  # noqa: E402
from encoders.baselines import MFCCEmbedder
from encoders.speaker import speaker_vectors  # noqa: E402
from encoders.checkpoint import DEFAULT_CHECKPOINTS, load_encoder, read_checkpoint  # noqa: E402
from encoders.embed import embed_songs  # noqa: E402
from encoders.timbre import TimbreConfig  # noqa: E402
from encoders.train import train  # noqa: E402
from recsys.evaluate import mean_average_precision, singer_top1  # noqa: E402
from _report import write_section  # noqa: E402  (benchmarks/ is on sys.path)

log = logging.getLogger("benchmarks.encoders")
POLICIES = [("none", "none"), ("pos", "pos"), ("pos", "neg"), ("neg", "pos"), ("neg", "neg")]


# ---------------------------------------------------------------------------------------------- helpers


def git_commit() -> str:
    """Short hash of the checked-out commit (empty outside a git checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def table(header: list[str], rows: list[list]) -> str:
    fmt = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in fmt])


class HeldOut:
    """The evaluation catalogue, loaded once: waveforms, log-mels, singer and melody labels."""

    def __init__(self, manifest: Path):
        cat = Catalogue.open(manifest)
        self.cat = cat
        self.waves = [load_audio(p) for p in cat.songs["path"]]
        self.mels = [log_mel(w) for w in self.waves]
        self.singers = cat.songs["singer"].to_numpy()
        self.melodies = cat.songs["melody_id"].to_numpy()
        self.seconds = sum(len(w) for w in self.waves) / 16000

    def scores(self, emb: np.ndarray) -> dict[str, float]:
        return {"singer_top1": singer_top1(emb, self.singers),
                "singer_map": mean_average_precision(emb, self.singers),
                "melody_map": mean_average_precision(emb, self.melodies, exclude=self.singers)}


class RealClips:
    """A labelled real-singing catalogue (e.g. the MIR-1K dev set: manifest with ``path, singer, song``), loaded
    once; scored with the query's own song excluded."""

    def __init__(self, folder: Path):
        man = pd.read_csv(folder / "manifest.csv")
        self.waves = [load_audio(folder / p) for p in man["path"]]
        self.mels = [log_mel(w) for w in self.waves]
        self.singers, self.songs = man["singer"].to_numpy(), man["song"].to_numpy()

    def scores(self, emb: np.ndarray) -> dict[str, float]:
        return {"top1": singer_top1(emb, self.singers, exclude=self.songs),
                "map": mean_average_precision(emb, self.singers, exclude=self.songs)}


def timed(fn, repeat: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------- parts
def evaluate(held: HeldOut, timbre, melody) -> tuple[str, dict]:
    mfcc = MFCCEmbedder()
    mfcc.fit(mfcc.raw_logmels(held.mels))  # standardised on the evaluation catalogue itself (its best case)
    rows, res = [], {}
    reps = [("timbre (ours)", timbre.embed_waveforms(held.waves)), ("MFCC mean+std", mfcc.embed_logmels(held.mels))]
    if melody is not None:
        reps.insert(1, ("melody (ours)", melody.embed_waveforms(held.waves)))
    for name, emb in reps:
        s = held.scores(emb)
        res[name] = s
        rows.append([name, s["singer_top1"], s["singer_map"], s["melody_map"]])
    md = table(["vectors", "singer top-1", "singer mAP", "melody mAP (other singers)"], rows)
    return md, res


def ablation(train_manifest: Path, held: HeldOut, runs: Path, *, epochs: int, base: TimbreConfig,
             threads: int | None, seeds: tuple[int, ...] = (0,), real: RealClips | None = None) -> tuple[str, list]:
    """Train one timbre encoder per pair policy and seed (same budget, from random weights) and evaluate each on
    the held-out catalogue (the fused vector, as shipped) and, with ``real``, on real singing (the fused vector and
    the TDNN alone); rows give the mean over seeds (each seed's value in brackets when there are several).
    Finished runs are reused (``train`` resumes them); runs share one song-bank cache."""
    rows, res = [], []
    for pitch, stretch in POLICIES:
        per_seed = []
        for seed in seeds:
            out = runs / (f"ablation-{pitch}-{stretch}" + (f"-seed{seed}" if seed else ""))
            t = time.perf_counter()
            path = train(train_manifest, out, encoder="timbre", pitch=pitch, stretch=stretch, epochs=epochs,
                         seed=seed, progress=False, threads=threads, timbre_config=base, init="none",
                         cache_dir=runs / "bank-cache",
                         command=f"benchmarks/encoder_quality.py ablation pitch={pitch} stretch={stretch} "
                                 f"epochs={epochs} seed={seed}")["timbre"]
            ckpt = read_checkpoint(path)
            enc = load_encoder(path)
            s = held.scores(enc.embed_waveforms(held.waves))
            if real is not None:
                fused, alone = real.scores(enc.embed_waveforms(real.waves)), real.scores(enc.tdnn_vectors(real.mels))
                s.update({"real_top1": fused["top1"], "real_map": fused["map"], "real_tdnn_top1": alone["top1"],
                          "real_tdnn_map": alone["map"]})
            secs = ckpt["train"]["seconds"]
            log.info("ablation %s/%s seed %d: %s (%.0f s, this call %.0f s)", pitch, stretch, seed, s, secs,
                     time.perf_counter() - t)
            per_seed.append({"pitch": pitch, "stretch": stretch, "seed": seed, **s, "train_seconds": secs,
                             "val_top1": ckpt["metrics"]["val_singer_top1"]})
        res += per_seed

        def cell(key):
            vals = [r[key] for r in per_seed]
            each = f" ({' / '.join(f'{v:.3f}' for v in vals)})" if len(vals) > 1 else ""
            return f"{np.mean(vals):.3f}{each}"
        real_cells = [f"{cell('real_top1')} / {cell('real_map')}", f"{cell('real_tdnn_top1')} / {cell('real_tdnn_map')}"] \
            if real is not None else []
        rows.append([pitch, stretch, cell("singer_top1"), cell("singer_map"), cell("melody_map"), *real_cells,
                     cell("val_top1"), f"{np.mean([r['train_seconds'] for r in per_seed]) / 60:.1f}"])
    real_heads = ["real singing top-1 / mAP (fused)", "real singing top-1 / mAP (TDNN alone)"] if real is not None else []
    md = table(["pitch", "stretch", "held-out singer top-1", "held-out singer mAP", "melody mAP (leak)",
                *real_heads, "val top-1 (seen singers)", "train min"], rows)
    return md, res


def throughput(held: HeldOut, timbre, melody, data: Path, *, n_songs: int = 4) -> tuple[str, dict]:
    """x real time on 3-minute songs built by concatenating held-out catalogue songs."""
    long_dir = data / "three-minute-songs"
    paths = []
    per_song = int(np.ceil(180 * 16000 / np.mean([len(w) for w in held.waves])))
    for i in range(n_songs):
        p = long_dir / f"song-{i}.flac"
        if not p.is_file():
            y = np.concatenate(held.waves[i * per_song:(i + 1) * per_song])[:180 * 16000]
            save_audio(p, 0.9 * y / np.abs(y).max())
        paths.append(p)
    waves = [load_audio(p) for p in paths]
    mels = [log_mel(w) for w in waves]
    seconds = sum(len(w) for w in waves) / 16000
    rows, res = [], {}

    def add(name, fn):
        t = timed(fn)
        res[name] = {"s_per_song": t / n_songs, "x_real_time": seconds / t}
        rows.append([name, f"{t / n_songs:.3f}", f"{seconds / t:.0f}x"])

    add("log-mel (from decoded audio)", lambda: [log_mel(w) for w in waves])
    add("timbre TDNN part (from log-mel)", lambda: timbre.tdnn_vectors(mels))
    add("timbre speaker part (from decoded audio)", lambda: speaker_vectors(waves, timbre.speaker))
    if melody is not None:
        add("melody encoder (from decoded audio)", lambda: melody.embed_waveforms(waves))
    add("decode FLAC (load_audio)", lambda: [load_audio(p) for p in paths])
    encs = {"timbre": timbre, "melody": melody} if melody is not None else {"timbre": timbre}
    add("end to end: files -> timbre + melody vectors (embed_songs)" if melody is not None else
        "end to end: files -> timbre vector (embed_songs)",
        lambda: embed_songs(paths, encs, progress=False, batch_size=4))
    md = table(["stage (3-min songs)", "s per song", "x real time"], rows)
    return md, res


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "out" / "bench-encoders",
                    help="cache folder for the synthetic catalogues, 3-min songs and ablation runs")
    ap.add_argument("--train-catalogue", type=Path, help="default: synthesize the default catalogue, seed 0")
    ap.add_argument("--eval-catalogue", type=Path, help="default: synthesize the default catalogue, seed 1")
    ap.add_argument("--timbre", type=Path, default=DEFAULT_CHECKPOINTS["timbre"])
    ap.add_argument("--melody", type=Path, default=DEFAULT_CHECKPOINTS["melody"])
    ap.add_argument("--ablation-epochs", type=int, default=12, help="training budget of each ablation run")
    ap.add_argument("--ablation-seeds", default="0", help="comma-separated training seeds per ablation row")
    ap.add_argument("--real", type=Path, default=None,
                    help="a labelled real-singing folder (manifest.csv: path, singer, song), e.g. the MIR-1K dev set: "
                         "the ablation also scores each run on it")
    ap.add_argument("--parts", default="eval,ablation,throughput",
                    help="comma-separated subset of eval, ablation, throughput")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: set_torch_threads())")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the throughput figures here (read by benchmarks/plots.py)")
    ap.add_argument("--write", action="store_true",
                    help="also replace this script's whole section of BENCHMARKS.md with the output (the section's "
                         "hand-written notes are lost; default: print only)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    threads = set_torch_threads(args.threads)

    args.data.mkdir(parents=True, exist_ok=True)
    train_manifest = args.train_catalogue or synthesize_catalogue(args.data / "synth-seed0", seed=0, workers=2)
    eval_manifest = args.eval_catalogue or synthesize_catalogue(args.data / "synth-seed1", seed=1, workers=2)
    held = HeldOut(eval_manifest)
    parts = set(args.parts.split(","))
    need_encoders = bool(parts & {"eval", "throughput"})
    timbre = load_encoder(args.timbre, kind="timbre") if need_encoders else None
    melody = load_encoder(args.melody, kind="melody") if need_encoders and args.melody.is_file() else None

    sections = []
    if "eval" in parts:
        tinfo = read_checkpoint(args.timbre)
        md_eval, _ = evaluate(held, timbre, melody)
        sections.append(
            f"Held-out evaluation: {len(held.cat)} songs by {held.cat.songs['singer'].nunique()} *unseen* singers "
            f"(synthetic catalogue seed 1; the encoders were trained on seed 0). Each song queries all other "
            f"songs; melody mAP counts the same melody sung by other singers. Timbre checkpoint "
            f"`{args.timbre.name}` (`{tinfo['train'].get('command', '?')}`, "
            f"{tinfo['train'].get('seconds', 0) / 60:.1f} min of training epochs).\n\n{md_eval}")
        if melody is None:
            sections[-1] += f"\n\n(no melody checkpoint at `{args.melody}`: melody rows skipped)"
        print(sections[-1], flush=True)

    if "ablation" in parts:
        base = TimbreConfig()  # the shipped encoder's recipe (its defaults); pitch / stretch / epochs vary
        seeds = tuple(int(x) for x in args.ablation_seeds.split(","))
        md_abl, _ = ablation(train_manifest, held, args.data / "runs", epochs=args.ablation_epochs, base=base,
                             threads=args.threads, seeds=seeds, real=RealClips(args.real) if args.real else None)
        text = (f"Pair-policy ablation (timbre): same budget for every row -- {args.ablation_epochs} epochs of "
                f"the seed-0 catalogue's training split ({base.batch_size} anchor songs per step, training seeds "
                f"{args.ablation_seeds}, "
                f"model and recording-chain augmentation as the shipped encoder, positives = "
                f"\"{base.positives}\"); a transform adds one view per anchor (pos: extra positive, neg: extra "
                f"hard negative). Held-out = seed-1 catalogue as above.\n\n{md_abl}")
        sections.append(text)
        print(text, flush=True)

    if "throughput" in parts:
        md_tp, res_tp = throughput(held, timbre, melody, args.data)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"stages": res_tp, "threads": threads, "song_seconds": 180,
                                             "commit": git_commit(), "load": os.getloadavg()}, indent=1))
            print(f"wrote {args.json}")
        text = (f"Embedding throughput, {threads} torch thread(s) on this shared 2-core machine (median of 3 runs, "
                f"4 songs of 3 minutes; target: >= 300x real time end to end, i.e. < 0.6 s per 3-min song).\n\n{md_tp}")
        sections.append(text)
        print(text, flush=True)

    if args.write:
        body = "\n\n".join(sections) + "\n\nReproduce: `python benchmarks/encoder_quality.py`"
        write_section(ROOT / "BENCHMARKS.md", "Encoders", body)
        print(f"wrote the Encoders section of {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
