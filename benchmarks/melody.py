"""Melody encoder benchmark: melody retrieval across singers, singer leakage, throughput. Prints a table.

On a synthetic catalogue made with a seed the shipped weights were NOT trained on (default seed 1: other
singers, other melodies, other recording chains), every song is a query; relevant = the other songs of the
same ``melody_id`` (sung by other singers, in their own keys and tempos, through their own recording
chains). Compared representations:

* ``melody (TCAE)``   the shipped/given checkpoint: pooled TCAE latent (the vector the index stores);
* ``raw input pooled`` ablation: mean + std over time of the TCAE's own input (the interval features),
  L2-normalised: does the TCAE add anything to its input?
* ``MFCC``            :class:`encoders.baselines.MFCCEmbedder` (standardised on the catalogue).

Leakage = singer top-1 of each representation (is the nearest other song by the same singer?); chance is
about 5/899. Throughput = audio seconds per second of compute for the melody encoder alone (salience +
TCAE, audio already decoded), measured on a 3-minute song built from catalogue audio, and, when a timbre
checkpoint is available, end to end for that song as a FLAC file through ``encoders.embed.embed_songs``
with both encoders (decode + log-mel + timbre + melody).

    python benchmarks/melody.py                                  # synthesize seed 1 (150 singers) to a temp dir
    python benchmarks/melody.py --catalogue DIR                  # an existing synthetic catalogue
    python benchmarks/melody.py --singers 60 --checkpoint path/to/melody.pt
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.audio import load_audio, save_audio  # noqa: E402
from encoders.base import l2_normalise, set_torch_threads  # noqa: E402
from encoders.baselines import MFCCEmbedder  # noqa: E402
from encoders.checkpoint import DEFAULT_CHECKPOINTS, load_encoder  # noqa: E402
from recsys.evaluate import mean_average_precision, singer_top1  # noqa: E402
from _report import add_catalogue_args, catalogue_from_args  # noqa: E402  (benchmarks/ is on sys.path)


def pooled_input(inputs: list[torch.Tensor]) -> np.ndarray:
    """Ablation vectors: mean and std over time of each (C_in, T) input, unit rows."""
    return l2_normalise(np.stack([torch.cat([x.mean(1), x.std(1)]).numpy() for x in inputs]))


def throughput(enc, wave: np.ndarray, runs: int = 5) -> float:
    """Median x real time of ``enc.embed_waveforms`` on one long waveform (after a warm-up call)."""
    enc.embed_waveforms([wave])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        enc.embed_waveforms([wave])
        times.append(time.perf_counter() - t0)
    return wave.size / enc.features.sample_rate / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINTS["melody"])
    ap.add_argument("--timbre", type=Path, default=DEFAULT_CHECKPOINTS["timbre"],
                    help="timbre checkpoint for the end-to-end throughput (skipped if missing)")
    add_catalogue_args(ap, seed=1)  # the shipped weights were trained on seed 0
    args = ap.parse_args()
    set_torch_threads()

    with tempfile.TemporaryDirectory() as tmp:
        cat = catalogue_from_args(args, Path(tmp))
        source, songs = cat.source, cat.songs
        if "melody_id" not in songs:
            raise SystemExit(f"{source}: no melody_id column; melody retrieval needs a synthetic catalogue")
        waves = [load_audio(p) for p in songs["path"]]

    enc = load_encoder(args.checkpoint, kind="melody")
    audio_s = sum(w.size for w in waves) / enc.features.sample_rate
    t0 = time.perf_counter()
    with torch.inference_mode():
        inputs = enc.inputs(waves)
    t_inputs = time.perf_counter() - t0
    t0 = time.perf_counter()
    tcae = enc.embed_inputs(inputs)
    t_model = time.perf_counter() - t0
    mfcc_emb = MFCCEmbedder()
    raw = mfcc_emb.raw_waveforms(waves)
    vectors = {"melody (TCAE)": tcae, "raw input pooled (ablation)": pooled_input(inputs),
               "MFCC (baseline)": mfcc_emb.fit(raw).transform(raw)}

    melodies, singers = songs["melody_id"].to_numpy(), songs["singer"].to_numpy()
    long_wave = np.concatenate(waves[: int(np.ceil(180 * enc.features.sample_rate / waves[0].size)) + 1])
    long_wave = long_wave[: 180 * enc.features.sample_rate]
    xrt = throughput(enc, long_wave)
    e2e = None
    if args.timbre.is_file():
        from encoders.embed import embed_songs
        timbre = load_encoder(args.timbre, kind="timbre")
        with tempfile.TemporaryDirectory() as tmp:
            song = save_audio(Path(tmp) / "three_minutes.flac", long_wave)
            embed_songs([song], {"timbre": timbre, "melody": enc}, progress=False, workers=1)  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                embed_songs([song], {"timbre": timbre, "melody": enc}, progress=False, workers=1)
                times.append(time.perf_counter() - t0)
        e2e = float(np.median(times))

    print(f"\ncatalogue: {source} ({len(songs)} songs, {len(set(singers))} singers, "
          f"{len(set(melodies))} melodies, {audio_s / 3600:.2f} h)")
    trained = torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("data", {})
    print(f"checkpoint: {args.checkpoint} (trained on {trained.get('source', '?')}, {trained.get('songs', '?')} "
          f"songs; dim {enc.dim}, receptive field {enc.model.receptive_field} frames = "
          f"{enc.model.receptive_field / enc.cfg.frames_per_second(enc.features.sample_rate):.1f} s)\n")
    header = f"{'representation':<30} {'melody mAP':>10} {'mAP other singers':>17} {'singer top-1 (leak)':>19}"
    print(header + "\n" + "-" * len(header))
    for name, v in vectors.items():
        print(f"{name:<30} {mean_average_precision(v, melodies):>10.3f} "
              f"{mean_average_precision(v, melodies, exclude=singers):>17.3f} {singer_top1(v, singers):>19.3f}")
    chance = (len(songs) / len(set(singers)) - 1) / (len(songs) - 1)
    print(f"{'(chance singer top-1)':<30} {'':>10} {'':>17} {chance:>19.3f}")
    print(f"\nmelody encoder on the catalogue: inputs {audio_s / t_inputs:.0f}x real time, "
          f"TCAE {audio_s / t_model:.0f}x, together {audio_s / (t_inputs + t_model):.0f}x")
    print(f"melody encoder on one 3-min song (embed_waveforms, median of 5): {xrt:.0f}x real time "
          f"({180 / xrt * 1000:.0f} ms)")
    if e2e is not None:
        print(f"end to end, 3-min FLAC, both encoders (embed_songs, median of 3): {180 / e2e:.0f}x real time "
              f"({e2e * 1000:.0f} ms; timbre: {args.timbre})")
    else:
        print(f"end to end: skipped (no timbre checkpoint at {args.timbre})")


if __name__ == "__main__":
    main()
