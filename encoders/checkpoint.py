"""Self-describing encoder checkpoints.

A checkpoint is one ``torch.save`` dict of plain types (loadable with ``weights_only=True``)::

    {"format": "singrec-encoder/1", "kind": "timbre" | "melody",
     "config": asdict(model config), "features": asdict(FeatureConfig),
     "state_dict": model weights, "metrics": {...}, "data": {training data summary},
     "train": {command, args, epochs done, seconds, ...}}

Training state (optimizer, rng, epoch) for resuming lives in a separate ``*.state.pt`` next to it, so the
shipped checkpoint stays small. ``load_encoder(path)`` is the one way to get an encoder back.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.errors import SingrecError
from data.features import FeatureConfig
from encoders.base import file_sha256  # noqa: F401  (part of this module's API)

FORMAT = "singrec-encoder/1"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"  # shipped default weights
DEFAULT_CHECKPOINTS = {"timbre": CHECKPOINT_DIR / "timbre.pt", "melody": CHECKPOINT_DIR / "melody.pt"}


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(x: Any) -> Any:
    """Metadata as plain Python types, so that ``torch.load(weights_only=True)`` accepts it
    (numpy scalars and arrays, Paths, ``torch.__version__`` and other str subclasses become plain types)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if x is None or type(x) in (bool, int, float, str) or isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return str(x)


def save_checkpoint(path: str | Path, *, kind: str, model: torch.nn.Module, config: dict,
                    features: FeatureConfig, metrics: dict | None = None, data: dict | None = None,
                    train: dict | None = None) -> Path:
    """Write a self-describing checkpoint atomically. ``config`` is ``asdict(model_config)``."""
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": _plain(dict(config)),
        "features": features.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics or {})),
        "data": _plain(dict(data or {})),
        "train": _plain(dict(train or {})),
    }
    atomic_torch_save(payload, path)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint dict (``weights_only=True``); clear errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise SingrecError("checkpoint file not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise SingrecError(f"not a readable singrec checkpoint ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SingrecError(f"unsupported checkpoint format {found!r}, expected {FORMAT!r}", path)
    for key in ("kind", "config", "features", "state_dict"):
        if key not in ckpt:
            raise SingrecError(f"checkpoint is missing {key!r}", path)
    return ckpt


def load_encoder(path: str | Path, *, kind: str | None = None):
    """Load a song embedder from a checkpoint (``weights_only=True``).

    Parameters
    ----------
    path : checkpoint file written by :func:`save_checkpoint`
    kind : if given, the checkpoint must be of this kind ("timbre" or "melody")

    Returns
    -------
    an :class:`encoders.base.Embedder` (``TimbreEncoder`` or ``MelodyEncoder``) in eval mode, with
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

