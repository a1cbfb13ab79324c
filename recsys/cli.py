"""The ``singrec`` command line: a thin map from verbs to typed, importable functions.

Heavy imports (torch, faiss, umap) happen inside the verbs, so ``singrec --help`` stays fast.
Errors the user can fix (:class:`~data.errors.SingrecError`) are printed as one clear line, exit code 2.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from data.errors import SingrecError

app = typer.Typer(
    name="singrec",
    help="Find singers who sound alike: synthesize or read a catalogue of isolated vocals, train the "
         "timbre and melody encoders, index the catalogue with FAISS and query it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_DIR = Path("demo_data")


def _run(fn, *args, **kwargs):
    """Call ``fn``; turn a SingrecError into a one-line message and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except SingrecError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library log messages.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (audio/, manifest.csv, ground_truth/, synth.json)."),
    singers: int = typer.Option(150, help="Number of singers."),
    songs: Optional[int] = typer.Option(None, help="Songs per singer (default: the synthesizer's default)."),
    seconds: Optional[float] = typer.Option(None, help="Seconds per song (default: the synthesizer's default)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    workers: int = typer.Option(1, help="Parallel processes."),
):
    """Write a synthetic singer catalogue: FLAC vocals + manifest + ground truth (singer parameters, melodies)."""
    from data.synth import synthesize_catalogue

    kwargs = {k: v for k, v in {"songs": songs, "seconds": seconds}.items() if v is not None}
    t0 = time.perf_counter()
    manifest = _run(synthesize_catalogue, out, singers=singers, seed=seed, workers=workers, **kwargs)
    info = json.loads((Path(out) / "synth.json").read_text())
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {manifest}")
    typer.echo(_synth_summary(info, dt))


def _synth_summary(info: dict, seconds_taken: float | None = None) -> str:
    counts = info.get("counts", {})
    total = float(info.get("total_seconds", 0.0))
    parts = [f"{counts.get('singers', '?')} singers", f"{counts.get('songs', '?')} songs",
             f"{counts.get('melodies', '?')} melodies", f"{total / 60:.1f} min of audio"]
    if seconds_taken:
        parts.append(f"{seconds_taken:.1f} s ({total / max(seconds_taken, 1e-9):.0f}x real time)")
    return ", ".join(parts)


@app.command()
def train(
    catalogue: Path = typer.Argument(..., help="Catalogue folder or manifest (CSV/Parquet) to train on."),
    out: Path = typer.Option(..., "--out", help="Folder for timbre.pt / melody.pt (and resumable state)."),
    encoder: str = typer.Option("both", help="timbre, melody or both."),
    pitch: str = typer.Option("neg", help="Pitch-shifted views as none, pos or neg pairs (timbre)."),
    stretch: str = typer.Option("neg", help="Time-stretched views as none, pos or neg pairs (timbre)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the encoder's config)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the encoder's config)."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(True, help="Continue from OUT's last checkpoint if there is one."),
):
    """Train the timbre and/or melody encoder; writes self-describing checkpoints."""
    from encoders.train import train as train_fn

    opts = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size}.items() if v is not None}
    paths = _run(train_fn, catalogue, out, encoder=encoder, pitch=pitch, stretch=stretch, seed=seed,
                 resume=resume, **opts)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command()
def demo(
    folder: Path = typer.Option(DEMO_DIR, help="Where the demo catalogue (and later its index) is kept."),
    seed: int = typer.Option(0, help="Catalogue seed."),
):
    """The main job: synthesize the default catalogue (cached) and summarise it."""
    from data.catalogue import Catalogue
    from data.synth import synthesize_catalogue

    cat_dir = folder / "catalogue"
    info_path = cat_dir / "synth.json"
    t0 = time.perf_counter()
    if info_path.is_file() and (cat_dir / "manifest.csv").is_file() and json.loads(info_path.read_text()).get(
            "args", {}).get("seed") == seed:
        typer.echo(f"using cached catalogue {cat_dir}")
    else:
        typer.echo(f"synthesizing the default catalogue into {cat_dir} ...")
        _run(synthesize_catalogue, cat_dir, seed=seed)
    info = json.loads(info_path.read_text())
    cat = _run(Catalogue.open, cat_dir)
    typer.echo(f"catalogue: {_synth_summary(info, time.perf_counter() - t0)}")
    table = cat.singer_table()
    typer.echo(f"singers: {len(table)}; songs per singer: {int(table['n_songs'].median())} (median)")
    for col in ("gender", "voice_type"):
        if col in table:
            typer.echo(f"{col}: " + ", ".join(f"{k} {v}" for k, v in table[col].value_counts().items()))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
