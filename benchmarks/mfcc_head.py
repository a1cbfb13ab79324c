"""A voice profile head for the MFCC baseline, so that ``benchmarks/ranking.py --mfcc-head DIR`` compares like
with like: the same ranking, the same voice statistics and the same kind of head, with MFCC mean/std vectors
where the shipped system has its learned timbre vectors.

It reads the song statistics that ``singrec train CATALOGUE [CATALOGUE ...] --encoder profile --out OUT``
cached beside ``OUT/profile.pt`` (``profile.songs.pt``, ``profile.songs.2.pt``, ...: the voice statistics of every
training song) and, for a head with frame networks, the out-of-fold frame-network estimates it wrote to
``OUT/profile.frame_estimates.npz``; computes the MFCC statistics of the same songs, fixes the MFCC
standardisation on them, and fits the head exactly as the shipped one is fitted
(:func:`encoders.profile.fit_profile`), with the shipped head's frame networks. Writes ``DIR/profile.pt`` (a
profile checkpoint whose "timbre" is the MFCC baseline) and ``DIR/mfcc.npz`` (the MFCC standardisation: mean,
scale).

Run: ``.venv/bin/python benchmarks/mfcc_head.py CATALOGUE [CATALOGUE ...] --profile OUT/profile.pt --out DIR``
(the catalogues in the order ``singrec train`` was given them)
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data.audio import load_audio
from data.catalogue import Catalogue
from data.errors import SingrecError
from data.synth import singer_truth_path
from encoders.base import set_torch_threads
from encoders.baselines import MFCCEmbedder
from encoders.checkpoint import load_encoder, save_checkpoint
from encoders.profile import VOICE_FEATURES_VERSION, ProfileConfig, fit_profile, join_training_singers, training_cache


def _raw_mfcc(paths: list[str]) -> np.ndarray:
    """Unstandardised MFCC statistics (N, 40) of audio files (one worker's share)."""
    set_torch_threads(1)
    return MFCCEmbedder().raw_waveforms([load_audio(p) for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("catalogues", type=Path, nargs="+", help="the synthetic training catalogues of the shipped head")
    ap.add_argument("--profile", type=Path, required=True,
                    help="the head (OUT/profile.pt, beside its song caches); its frame networks are used too")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    cats = [Catalogue.open(c) for c in args.catalogues]
    voice, singers, paths, truths = [], [], [], []
    for k, cat in enumerate(cats):
        cache_path = training_cache(args.profile, "songs", k)
        cache = torch.load(cache_path, weights_only=True)
        if cache["failed"] or list(cache["singers"]) != list(cat.songs["singer"]):
            raise SingrecError("the cached statistics are not those of this catalogue's songs, in order", cache_path)
        if not cache["key"].endswith(f" v{VOICE_FEATURES_VERSION}"):  # train_profile's key ends with the version
            raise SingrecError(f"the cached voice statistics are not version {VOICE_FEATURES_VERSION}; run "
                               "`singrec train ... --encoder profile` again first", cache_path)
        voice.append(cache["voice"].numpy())
        singers.append(cache["singers"])
        paths += list(cat.songs["path"])
        truths.append(pd.read_csv(singer_truth_path(cat.source)))
    voice = np.concatenate(voice)
    singers, truth = join_training_singers(singers, truths)  # named as train_profile names them
    chunks = [paths[i:i + 200] for i in range(0, len(paths), 200)]
    with ProcessPoolExecutor(args.workers) as pool:
        raw = np.concatenate(list(tqdm(pool.map(_raw_mfcc, chunks), total=len(chunks), unit="chunk", desc="mfcc")))
    mfcc = MFCCEmbedder().fit(raw)
    vectors = mfcc.transform(raw)  # (N, 40) unit rows, as an index stores them
    cfg = ProfileConfig()
    shipped = load_encoder(args.profile, kind="profile")
    if shipped.frame_cfg is not None:
        with np.load(training_cache(args.profile, "frame_estimates")) as z:
            if str(z["frame_net_sha"]) != shipped.frame_net_sha or list(z["singers"]) != singers:
                raise SingrecError("the frame-network estimates are not those of this head's training songs",
                                   args.profile)
            voice = np.hstack([voice, z["estimates"]])
        cfg = ProfileConfig(frame_net=shipped.cfg.frame_net)
    cfg = replace(cfg, **{f: getattr(shipped.cfg, f) for f in ("kernel_landmarks", "kernel_share")})
    head, metrics = fit_profile(voice, vectors, singers, truth, cfg=cfg)
    if cfg.frame_net:
        head.frame_nets.load_state_dict(shipped.frame_nets.state_dict())
    args.out.mkdir(parents=True, exist_ok=True)
    data = [{**cat.summary(), "timbre": "MFCC mean/std baseline (encoders/baselines.py)"} for cat in cats]
    save_checkpoint(args.out / "profile.pt", kind="profile", model=head, config=asdict(head.cfg),
                    features=mfcc.features, metrics=metrics,
                    data=data[0] if len(data) == 1 else {"catalogues": data, "singers": metrics["singers"]},
                    train={"command": shlex.join(["python", *sys.argv]), "seconds": round(time.time() - t0, 1)})
    np.savez(args.out / "mfcc.npz", mean=mfcc.mean, scale=mfcc.scale)
    print(f"MFCC head: {metrics['singers']} singers, 5-fold CV mean R^2 {metrics['cv_r2_mean']:.3f} "
          f"(linear part {metrics['cv_r2_mean_linear']:.3f}); {time.time() - t0:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
