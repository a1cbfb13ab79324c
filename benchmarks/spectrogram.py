"""Spectrograms of a few synthetic songs from different singers -> docs/spectrograms.png.

Shows what the synthetic catalogue looks like: harmonics following the melody with vibrato, formants,
consonant noise, reverb tails and background noise. The first panel is a dry voice (no recording chain).

    python benchmarks/spectrogram.py [--out docs/spectrograms.png] [--seed 0] [--seconds 6]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.synth import make_melodies, sample_chain, sample_singers, synthesize_song  # noqa: E402

SR = 16000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "spectrograms.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    singers = sample_singers(40, rng)
    melodies = make_melodies(2, rng)
    # one singer per genre (classical: wide early vibrato; jazz/soul: scoops; pop: breathy, late vibrato)
    picks = [singers[singers.genre == g].iloc[0] for g in ("classical", "pop", "jazz", "soul")
             if (singers.genre == g).any()]
    fig, axes = plt.subplots(len(picks), 1, figsize=(12, 3.0 * len(picks)), sharex=True)
    for i, (ax, s) in enumerate(zip(np.atleast_1d(axes), picks)):
        mel = melodies[i % 2]
        key = int(round(s.p_tessitura - 5))
        chain = None if i == 0 else sample_chain(rng)
        y = synthesize_song(s, mel, key=key, tempo=mel.tempo, chain_params=chain, seconds=args.seconds,
                            sr=SR, rng=rng)
        f, t, z = scipy.signal.stft(y, SR, nperseg=1024, noverlap=1024 - 128)
        db = 20 * np.log10(np.abs(z) + 1e-9)
        ax.pcolormesh(t, f / 1000, db, vmin=db.max() - 80, vmax=db.max(), cmap="magma", shading="auto")
        cond = "dry" if chain is None else f"RT60 {chain['rt60']:.2f} s, SNR {chain['snr_db']:.0f} dB"
        ax.set_title(f"{s.singer} ({s.gender}, {s.voice_type}, {s.genre}) - {mel.melody_id} in key {key}, "
                     f"{mel.tempo:.0f} BPM - {cond}", fontsize=9)
        ax.set_ylabel("kHz")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
