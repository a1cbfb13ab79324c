"""Encoders from self-describing checkpoints, and the shipped default weights.

The checkpoint file format (written by ``save_checkpoint``, read by ``read_checkpoint``) is defined in
:mod:`encoders.base`, below the encoder modules, so that they can write checkpoints without importing this
module; this module imports the encoder classes to build them back. ``load_encoder(path)`` is the one way to
get an encoder back. ``save_checkpoint``, ``read_checkpoint``, ``atomic_torch_save``, ``file_sha256`` and
``FORMAT`` are importable from here too.
"""
from __future__ import annotations

from pathlib import Path

from data.errors import SingrecError
from data.features import FeatureConfig
from encoders.base import CHECKPOINT_FORMAT as FORMAT  # noqa: F401  (this module's API)
from encoders.base import atomic_torch_save, file_sha256, read_checkpoint, save_checkpoint  # noqa: F401

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"  # shipped default weights
DEFAULT_CHECKPOINTS = {"timbre": CHECKPOINT_DIR / "timbre.pt", "melody": CHECKPOINT_DIR / "melody.pt",
                       "gender": CHECKPOINT_DIR / "gender.pt"}


def load_encoder(path: str | Path, *, kind: str | None = None):
    """Load a song embedder from a checkpoint (``weights_only=True``).

    Parameters
    ----------
    path : checkpoint file written by :func:`encoders.base.save_checkpoint`
    kind : if given, the checkpoint must be of this kind ("timbre", "melody" or "gender")

    Returns
    -------
    an :class:`encoders.base.Embedder` (``TimbreEncoder`` or ``MelodyEncoder``) in eval mode, or the
    :class:`encoders.voice.GenderClassifier`, with
    ``.checkpoint_path``, ``.checkpoint_sha256`` and ``.metrics`` set.
    """
    ckpt = read_checkpoint(path)
    if kind is not None and ckpt["kind"] != kind:
        raise SingrecError(f"expected a {kind} checkpoint, found a {ckpt['kind']} one", path)
    features = FeatureConfig(**ckpt["features"])
    if ckpt["kind"] == "timbre":
        from encoders.timbre import TimbreEncoder as cls
    elif ckpt["kind"] == "melody":
        from encoders.melody import MelodyEncoder as cls
    elif ckpt["kind"] == "gender":
        from encoders.voice import GenderClassifier as cls
    else:
        raise SingrecError(f"unknown encoder kind {ckpt['kind']!r}", path)
    try:
        enc = cls.from_checkpoint(ckpt, features=features)
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:  # config fields / weight shapes do not match the code
        raise SingrecError(f"checkpoint does not match this version's {ckpt['kind']} model: {exc}", path) from exc
    enc.checkpoint_path = str(path)
    enc.checkpoint_sha256 = file_sha256(path)
    enc.metrics = ckpt.get("metrics", {})
    return enc


def load_default_encoders(checkpoints: str | Path | None = None) -> dict:
    """``{"timbre": enc, "melody": enc}`` from a folder with timbre.pt / melody.pt (default: shipped weights)."""
    folder = Path(checkpoints) if checkpoints else CHECKPOINT_DIR
    encs = {}
    for kind in ("timbre", "melody"):
        p = folder / f"{kind}.pt"
        if not p.is_file():
            raise SingrecError(f"no {kind} checkpoint in this folder (expected {p.name}); "
                               "train one with `singrec train`", folder)
        encs[kind] = load_encoder(p, kind=kind)
    return encs

