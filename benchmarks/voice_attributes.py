"""Voice attributes: predicted gender and measured range, on real singing and on the synthetic held-out catalogue.

1. MIR-1K dev set (DEV: ``../shared/realdev/mir1k``, never committed) indexed from a manifest with ``path, singer,
   song`` only: song- and singer-level accuracy of ``gender_pred`` (shipped ``gender.pt``) against the dev set's
   own labels (a song carries its singer's pooled answer; ``songs_own_audio``: each song's own vector alone). Then the same index with a manifest where half the singers (seeded) have a ``gender`` column,
   rebuilt with ``--fit-gender gender`` (``--append``: no song is embedded again): accuracy on the other half.
2. The f0 tracker against ``librosa.pyin`` on a few named real clips: the 5th / 50th / 95th percentile of the
   voiced pitch from each, and the time each takes.
3. Synthetic held-out catalogue (``singrec synth CAT --seed 1``): singer-level gender accuracy, and the share
   of songs whose measured range (5th / 95th percentile) is within one semitone of the known notes'
   (the duration-weighted 5th / 95th percentile of the melody's notes in the song's key).

Run: ``.venv/bin/python benchmarks/voice_attributes.py DEV --synthetic CAT1 --work W``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd

from data.audio import load_audio
from data.synth import _n_melodies, _rng, make_melodies
from encoders.voice import f0_track
from index.build import build_catalogue_index
from index.store import current_snapshot


def accuracy(index_dir: Path, truth: pd.Series, *, only: set | None = None) -> dict:
    """Song- and singer-level accuracy of ``gender_pred`` against {singer: 'f'/'m'} (optionally some singers)."""
    snap = current_snapshot(index_dir)  # the published snapshot (index/store.py)
    songs = pd.read_parquet(snap / "songs.parquet")
    singers = pd.read_parquet(snap / "singers.parquet")
    if only is not None:
        songs, singers = songs[songs["singer"].isin(only)], singers[singers["singer"].isin(only)]
    return {"songs": float(np.mean(songs["gender_pred"] == songs["singer"].map(truth))),
            "singers": float(np.mean(singers["gender_pred"] == singers["singer"].map(truth))),
            "n_songs": len(songs), "n_singers": len(singers)}


def own_audio_accuracy(index_dir: Path, truth: pd.Series) -> float:
    """Song-level accuracy of the shipped classifier on each song's own speaker vector, before a singer's songs are
    pooled (the index gives every song its singer's pooled answer)."""
    from encoders.checkpoint import CHECKPOINT_DIR, load_encoder
    from encoders.voice import speaker_part

    snap = current_snapshot(index_dir)
    songs = pd.read_parquet(snap / "songs.parquet")
    p = load_encoder(CHECKPOINT_DIR / "gender.pt").predict_proba(
        speaker_part(np.load(snap / "embeddings" / "songs_timbre.npy")))
    return float(np.mean(np.where(p > 0.5, "f", "m") == songs["singer"].map(truth).to_numpy()))


def real_gender(dev: Path, work: Path, seed: int) -> dict:
    man = pd.read_csv(dev / "manifest.csv")
    man["path"] = [str(dev / p) for p in man["path"]]
    truth = man.groupby("singer")["gender"].first().str.lower()
    work.mkdir(parents=True, exist_ok=True)
    man[["path", "singer", "song"]].to_csv(work / "unlabelled.csv", index=False)
    out = work / "index"
    build_catalogue_index(work / "unlabelled.csv", out)
    shipped = accuracy(out, truth)
    shipped["songs_own_audio"] = own_audio_accuracy(out, truth)
    singers = sorted(truth.index)
    labelled = set(np.random.default_rng(seed).permutation(singers)[:len(singers) // 2])
    half = man[["path", "singer", "song"]].copy()
    half["gender"] = [truth[s] if s in labelled else None for s in half["singer"]]
    half.to_csv(work / "half.csv", index=False)
    report = build_catalogue_index(work / "half.csv", out, append=True, fit_gender="gender")
    fitted = accuracy(out, truth, only=set(singers) - labelled)
    return {"shipped": shipped, "fit_gender_half": fitted, "labelled": sorted(labelled),
            "fit_summary": report.summary()}


def pyin_check(dev: Path, clips: list[str]) -> list[dict]:
    rows = []
    for rel in clips:
        y = load_audio(dev / rel)
        t0 = time.perf_counter()
        midi, voiced = f0_track(y)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        f0, flag, _ = librosa.pyin(y, fmin=65.4, fmax=1046.5, sr=16000, frame_length=1024, hop_length=160)
        pyin_s = time.perf_counter() - t0
        ref = librosa.hz_to_midi(f0[flag & np.isfinite(f0)])
        rows.append({"clip": rel, "ours": np.percentile(midi[voiced], [5, 50, 95]).round(2).tolist(),
                     "pyin": np.percentile(ref, [5, 50, 95]).round(2).tolist(), "ours_s": ours_s, "pyin_s": pyin_s})
    return rows


def known_ranges(catalogue: Path) -> pd.DataFrame:
    """song path -> duration-weighted 5th / 95th percentile of the notes sung (MIDI), from the synthesizer: the
    song's melody in its key and tempo, looped from the start for the song's length (as ``data.synth`` lays it
    out, less its random onset of 0.05-0.4 s)."""
    info = json.loads((catalogue / "synth.json").read_text())["args"]
    melodies = {m.melody_id: m for m in make_melodies(_n_melodies(info["singers"], info["songs"]),
                                                       _rng(info["seed"], 2))}
    truth = pd.read_csv(catalogue / "ground_truth" / "songs.csv")
    rows = []
    for r in truth.itertuples():
        mel = melodies[r.melody_id]
        semis, beats = mel.semitones(), np.asarray(mel.beats, float) * 60.0 / r.tempo  # seconds per note
        notes, weights, t = [], [], 0.2
        while t < info["seconds"]:
            for semi, dur in zip(semis, beats):
                if np.isfinite(semi):
                    notes.append(r.key + semi)
                    weights.append(min(dur, info["seconds"] - t))
                t += dur
                if t >= info["seconds"]:
                    break
        notes, weights = np.asarray(notes), np.asarray(weights)
        order = np.argsort(notes)
        cum = np.cumsum(weights[order]) / weights.sum()
        rows.append({"path": str((catalogue / r.path).resolve()),
                     "known_low": notes[order][np.searchsorted(cum, 0.05)],
                     "known_high": notes[order][np.searchsorted(cum, 0.95)]})
    return pd.DataFrame(rows)


def synthetic(catalogue: Path, work: Path) -> dict:
    out = work / "index-synthetic"
    build_catalogue_index(catalogue / "manifest.csv", out)
    truth = pd.read_csv(catalogue / "ground_truth" / "singers.csv").set_index("singer")["gender"]
    acc = accuracy(out, truth)
    songs = pd.read_parquet(current_snapshot(out) / "songs.parquet")
    known = known_ranges(catalogue).set_index("path")
    k = known.loc[[str(Path(p).resolve()) for p in songs["path"]]]
    within = (np.abs(songs["range_low_midi"].to_numpy() - k["known_low"].to_numpy()) <= 1.0) & \
             (np.abs(songs["range_high_midi"].to_numpy() - k["known_high"].to_numpy()) <= 1.0)
    return {"gender": acc, "range_within_1_semitone": float(within.mean()), "n_songs": len(songs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dev", type=Path)
    ap.add_argument("--synthetic", type=Path, help="a catalogue made by `singrec synth CAT --seed 1`")
    ap.add_argument("--work", type=Path, default=Path("/tmp/singrec-voice"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips", default="audio/Ani/Ani_1_01.flac,audio/amy/amy_1_01.flac,audio/bobon/bobon_1_01.flac,"
                                       "audio/davidson/davidson_1_01.flac,audio/heycat/heycat_1_01.flac")
    args = ap.parse_args()
    dev, work = args.dev.resolve(), args.work.resolve()
    result = {"real": real_gender(dev, work / "real", args.seed), "pyin": pyin_check(dev, args.clips.split(","))}
    if args.synthetic:
        result["synthetic"] = synthetic(args.synthetic.resolve(), work)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
