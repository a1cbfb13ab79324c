"""The ``singrec`` command line: a thin map from verbs to typed, importable functions.

Heavy imports (torch, faiss, umap) happen inside the verbs, so ``singrec --help`` stays fast.
Errors the user can fix (:class:`~data.errors.SingrecError`) are printed as one clear line, exit code 2.
The command line is the outermost surface (it also serves the page), so it lives on the top floor, ``app``;
``python -m app.cli`` runs it without the console script.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

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
    encoder: str = typer.Option("both", help="timbre, melody, both, or gender (the gender classifier, fitted on the "
                                             "catalogue's gender column, e.g. a synthetic one)."),
    pitch: str = typer.Option("neg", help="Pitch-shifted views as none, pos or neg pairs (timbre)."),
    stretch: str = typer.Option("pos", help="Time-stretched views as none, pos or neg pairs (timbre)."),
    positives: Optional[str] = typer.Option(None, help="Timbre base positive: another crop of the same 'song' "
                                                      "or a song by the same 'singer' (default: the config's)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the encoder's config)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the encoder's config)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the encoder's config)."),
    init: str = typer.Option("shipped", help="Where the timbre encoder starts: 'shipped' (fine-tune the shipped "
                                             "weights on this catalogue), a timbre.pt path, or 'none' (random)."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(True, help="Continue from OUT's last checkpoint if there is one."),
):
    """Train the timbre and/or melody encoder; writes self-describing checkpoints."""
    from encoders.train import train as train_fn

    opts = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr}.items() if v is not None}
    paths = _run(train_fn, catalogue, out, encoder=encoder, pitch=pitch, stretch=stretch, positives=positives,
                 seed=seed, resume=resume, init=init, **opts)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command("index")
def index_cmd(
    catalogue: Path = typer.Argument(..., help="Catalogue folder or manifest (CSV/Parquet)."),
    out: Path = typer.Option(..., "--out", help="Index directory to write (resumed if a build was interrupted)."),
    checkpoints: Optional[Path] = typer.Option(None, help="Folder with timbre.pt and melody.pt "
                                                            "(default: the shipped weights)."),
    index_key: str = typer.Option("auto", help="FAISS factory string for song indexes: auto, Flat, HNSW32, "
                                               "IVF4096,Flat, ... (auto: exact up to 100k songs)."),
    index_memory: str = typer.Option("auto", help="Memory budget of each song index for --index-key auto, e.g. "
                                                  "4G (auto: half the memory available); past it, a compressed index."),
    append: bool = typer.Option(False, "--append", help="Keep vectors of songs already indexed; embed only new ones."),
    chunk_size: int = typer.Option(32, help="Songs per resumable chunk."),
    fit_gender: Optional[str] = typer.Option(None, "--fit-gender", help="Catalogue column with the gender of some "
                                             "singers: fit the gender classifier on them and predict the rest."),
    keep: int = typer.Option(2, "--keep", help="Published snapshots kept in INDEX_DIR/snapshots (newest first)."),
    engine: str = typer.Option("in-process", help="What embeds the songs: in-process, or ray (Ray Data; "
                                                  "pip install singrec\\[ray]). The index is the same."),
    address: str = typer.Option("local", help="--engine ray: local (a private Ray on this machine), auto (the "
                                               "cluster joined with `ray start`) or ray://HOST:10001."),
    actors: Optional[int] = typer.Option(None, help="--engine ray: embedding actors (default: CPUs less one)."),
):
    """Embed every song with both encoders and publish a new snapshot of the index directory (FAISS indexes,
    tables, map, predicted gender and measured range); readers switch to it at once, the previous snapshot stays
    readable."""
    from index.build import build_catalogue_index

    report = _run(build_catalogue_index, catalogue, out, checkpoints=checkpoints, index_key=index_key,
                  append=append, chunk_size=chunk_size, fit_gender=fit_gender, keep=keep, engine=engine,
                  address=address, actors=actors, index_memory=index_memory)
    typer.echo(report.summary())
    if len(report.failures):
        typer.echo(f"{len(report.failures)} file(s) could not be indexed "
                   f"(see {report.snapshot_dir / 'failures.csv'}):")
        for row in report.failures.head(10).itertuples():
            typer.echo(f"  {row.path}: {row.reason}")


def _parse_where(where: list[str]) -> dict:
    filters: dict = {}
    for item in where:
        if "=" not in item:
            raise SingrecError(f"--where expects COLUMN=VALUE[,VALUE...], got {item!r}")
        col, vals = item.split("=", 1)
        filters[col.strip()] = [v.strip() for v in vals.split(",")]
    return filters


@app.command()
def similar(
    index_dir: Path = typer.Argument(..., help="Index directory made by `singrec index`."),
    singer: list[str] = typer.Option([], "--singer", help="Query singer; repeat for a mix (NAME or NAME:WEIGHT)."),
    song: Optional[str] = typer.Option(None, "--song", help="Query song id."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Query audio file (embedded on the fly)."),
    k: int = typer.Option(10, "--k", help="Number of singers."),
    timbre_weight: Optional[float] = typer.Option(
        None, help="Weight of the voice (timbre) vs melody similarity, 0..1 (default: the ranking's, "
                   "recsys.rank.TIMBRE_WEIGHT)."),
    where: list[str] = typer.Option([], "--where", help="Metadata filter COLUMN=VALUE[,VALUE...], COLUMN as named "
                                                        "in the catalogue; repeatable."),
    diversity: float = typer.Option(0.0, help="0 = pure relevance, up to 1 = more varied results (MMR)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records instead of a table."),
):
    """Singers similar to a singer, a mix of singers, a song or an audio clip."""
    from recsys.rank import TIMBRE_WEIGHT, Audio, Mix, Recommender, Song, to_json

    given = sum([bool(singer), song is not None, audio is not None])
    if given != 1:
        typer.secho("error: give exactly one of --singer, --song or --audio", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if singer:
        weights = {}
        for item in singer:
            name, _, w = item.rpartition(":") if ":" in item else (item, "", "1")
            try:
                weights[name] = float(w)
            except ValueError:
                weights[item] = 1.0
        query = Mix(weights)
    else:
        query = Song(song) if song is not None else Audio(str(audio), label=Path(audio).name)
    rec = _run(Recommender.load, index_dir)
    weight = TIMBRE_WEIGHT if timbre_weight is None else timbre_weight
    res = _run(rec.similar_singers, query, k=k, timbre_weight=weight, filters=_run(_parse_where, where),
               diversity=diversity)
    if as_json:
        typer.echo(to_json(res))
    else:
        import pandas as pd
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                               "{:.3f}".format):
            typer.echo(res.to_string(index=False))


@app.command()
def evaluate(
    index_dir: Path = typer.Argument(..., help="Index directory made by `singrec index`."),
    k: int = typer.Option(10, "--k", help="Length of the similar-singer lists scored (nDCG, --agree)."),
    timbre_weight: Optional[float] = typer.Option(
        None, help="Weight used by the ranking being evaluated (default: the ranking's, recsys.rank.TIMBRE_WEIGHT)."),
    agree: List[str] = typer.Option([], "--agree", help="Metadata column (e.g. gender): share of each singer's k "
                                                        "similar singers with its value. Repeatable."),
    baseline: bool = typer.Option(False, "--baseline", help="Also score the MFCC-20 mean+std baseline "
                                                            "(reads the audio again)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Singer retrieval (own recording excluded: a `song` column groups clips of one recording), agreement of the
    similar-singer lists on metadata, the MFCC baseline, and nDCG against a synthetic catalogue's ground truth."""
    from recsys.evaluate import evaluate_index

    metrics = _run(evaluate_index, index_dir, k=k, timbre_weight=timbre_weight, agree=agree, baseline=baseline)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    for name, value in metrics.items():
        typer.echo(f"{name:36s} {value:.3f}" if isinstance(value, float) else f"{name:36s} {value}")


@app.command("app")
def app_cmd(
    index_dir: Path = typer.Argument(..., help="Index directory made by `singrec index`."),
    port: int = typer.Option(8501, help="Port on localhost."),
):
    """Serve the explorer page (UMAP map, similar singers, query by clip) on localhost."""
    from app.serve import serve

    _run(serve, index_dir, port=port)


@app.command()
def demo(
    folder: Path = typer.Option(DEMO_DIR, help="Where the demo catalogue and index are kept (cached)."),
    seed: int = typer.Option(0, help="Catalogue seed."),
    serve: bool = typer.Option(True, help="Serve the explorer page at the end (Ctrl-C stops it)."),
    port: int = typer.Option(8501, help="Port of the page on localhost."),
):
    """The main job: synthesize the default catalogue, index it with the shipped encoders, show two example
    queries and serve the explorer page. Each step is cached in FOLDER and skipped when up to date."""
    from data.catalogue import Catalogue
    from data.synth import synthesize_catalogue

    t_start = time.perf_counter()
    cat_dir, index_dir = folder / "catalogue", folder / "index"
    typer.echo(f"[1/3] catalogue: {cat_dir} (synthesized once; files already made are kept)")
    t0 = time.perf_counter()
    # resumes: songs already written by the same synthesizer version and arguments are not made again
    _run(synthesize_catalogue, cat_dir, seed=seed, workers=2)  # output does not depend on workers
    info_path = cat_dir / "synth.json"
    typer.echo(f"      done in {time.perf_counter() - t0:.0f} s")
    cat = _run(Catalogue.open, cat_dir)
    typer.echo(f"      {_synth_summary(json.loads(info_path.read_text()))}")

    from index.build import build_catalogue_index
    from encoders.checkpoint import DEFAULT_CHECKPOINTS, file_sha256
    from index.store import read_info

    try:  # up to date = same catalogue files and the same shipped weights
        info = read_info(index_dir)
        fresh = info["catalogue"].get("fingerprint") == cat.fingerprint() and all(
            info["encoders"][k].get("sha256") == file_sha256(p) for k, p in DEFAULT_CHECKPOINTS.items())
    except (SingrecError, KeyError, OSError):
        fresh = False
    if fresh:
        typer.echo(f"[2/3] index: up to date in {index_dir}")
    else:
        typer.echo(f"[2/3] index: embedding {len(cat)} songs with the shipped encoders into {index_dir} ...")
        typer.echo("      " + _run(build_catalogue_index, cat, index_dir).summary())

    from recsys.rank import TIMBRE_WEIGHT, Recommender

    rec = _run(Recommender.load, index_dir)
    typer.echo(f"[3/3] similar singers (score = {TIMBRE_WEIGHT:g} x timbre + {1 - TIMBRE_WEIGHT:g} x melody):")
    import pandas as pd
    for name in rec.singers["singer"].iloc[[0, len(rec.singers) // 2]]:
        res = rec.similar_singers(name, k=5)
        meta = " ".join(str(rec.singers.set_index("singer").at[name, c]) for c in rec.metadata_columns[:2])
        typer.echo(f"\n  like {name} ({meta}):")
        cols = ["rank", "singer", "score", "timbre_score", "melody_score", "match_song",
                *rec.metadata_columns[:2]]
        with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
            typer.echo("    " + res[cols].to_string(index=False).replace("\n", "\n    "))
    typer.echo(f"\nready in {time.perf_counter() - t_start:.0f} s")
    if serve:
        from app.serve import serve as serve_page

        typer.echo(f"serving the explorer on http://localhost:{port} (Ctrl-C to stop)")
        _run(serve_page, index_dir, port=port)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
