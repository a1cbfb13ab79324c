"""Shared by the benchmark scripts: write one section of BENCHMARKS.md (scripts run as `python benchmarks/X.py`,
so this folder is on sys.path and `from _report import write_section` works)."""
from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the whole ``## title`` section of a markdown file, leaving other sections alone.

    Everything in the section is replaced, including text added by hand, so the scripts call this only when
    asked to (``--write``)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


def add_catalogue_args(ap, *, seed: int, singers: int | None = None, songs: int | None = None,
                       seconds: float | None = None) -> None:
    """``--catalogue`` (an existing one) or the synthetic one to make: ``--singers --songs --seconds --seed
    --workers`` (defaults: the given size, else the default catalogue's; the given seed)."""
    from data.synth import DEFAULT_SECONDS, DEFAULT_SINGERS, DEFAULT_SONGS

    ap.add_argument("--catalogue", type=Path, help="an existing catalogue folder or manifest; default: synthesize")
    ap.add_argument("--singers", type=int, default=singers or DEFAULT_SINGERS)
    ap.add_argument("--songs", type=int, default=songs or DEFAULT_SONGS)
    ap.add_argument("--seconds", type=float, default=seconds or DEFAULT_SECONDS)
    ap.add_argument("--seed", type=int, default=seed, help=f"synth seed (default {seed})")
    ap.add_argument("--workers", type=int, default=2)


def catalogue_from_args(args, tmp: Path):
    """The catalogue of :func:`add_catalogue_args`' options, synthesized into ``tmp`` unless ``--catalogue``
    was given; prints how long synthesis took. Returns a :class:`data.catalogue.Catalogue`."""
    import time

    from data.catalogue import Catalogue
    from data.synth import synthesize_catalogue

    source = args.catalogue
    if source is None:
        t0 = time.perf_counter()
        source = synthesize_catalogue(Path(tmp) / "cat", singers=args.singers, songs=args.songs,
                                      seconds=args.seconds, seed=args.seed, workers=args.workers)
        print(f"synthesized {args.singers} singers x {args.songs} songs x {args.seconds:g} s (seed {args.seed}) "
              f"in {time.perf_counter() - t0:.1f} s")
    return Catalogue.open(source)
