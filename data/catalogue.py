"""The catalogue: which songs exist, who sings them, and their metadata.

Two inputs (see shared/DESIGN.md):

- a folder ``<root>/<singer>/<song>.<wav|flac|ogg|mp3>``;
- a CSV or Parquet manifest with columns ``path`` (absolute, or relative to the manifest's folder) and
  ``singer``; every other column is metadata (gender, genre, ...) carried into the index.

Metadata may have any name. The index and the ranking compute columns of their own (``RESERVED_COLUMNS``:
every column of songs.parquet, singers.parquet, map.parquet and of a result row); a metadata column with
one of those names, or with a name that starts with ``meta:``, is kept as ``meta:<name>`` (:func:`stored_name`),
so a computed field is never overwritten and no two columns ever share a name. ``Catalogue.metadata`` maps
each name the user gave to the column that holds it.

Song ids are stable: the song's path relative to the catalogue root, in POSIX form, without extension
(``"ava-moreno/song-03"``). Validation collects *every* problem before raising one
:class:`~data.errors.SingrecError` that lists them all.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from data.audio import AUDIO_EXTENSIONS
from data.errors import SingrecError

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
REQUIRED_COLUMNS = ("path", "singer")
# Columns computed by singrec, in any table a user column could end up in: songs.parquet (song_id, path,
# rel_path, singer, duration and the voice attributes of index/attributes.py), singers.parquet (singer, n_songs,
# voice attributes), map.parquet (kind, id, singer, x, y, cluster) and a result row of recsys.rank (rank, singer,
# score, timbre_score, melody_score, query_song, match_song). tests/test_metadata.py checks that every computed
# column of those tables is listed here.
RESERVED_COLUMNS = ("song_id", "path", "rel_path", "singer", "duration", "n_songs", "kind", "id", "x", "y",
                    "cluster", "rank", "score", "timbre_score", "melody_score", "query_song", "match_song",
                    "gender_p", "gender_pred", "gender_source", "range_low_midi", "range_centre_midi",
                    "range_high_midi", "range_low", "range_high", "voice_type_pred")
META_PREFIX = "meta:"
MAX_LISTED_PROBLEMS = 50


def stored_name(name) -> str:
    """The column that holds the user's metadata column ``name``: ``name`` itself, or ``meta:<name>`` when
    ``name`` is a computed column (``RESERVED_COLUMNS``) or itself starts with ``meta:``.

    The map is one-to-one (a prefixed name starts with ``meta:``, a kept one does not, and no reserved name
    does), so distinct user columns stay distinct and never take a computed column's place.
    """
    name = str(name)
    return META_PREFIX + name if name in RESERVED_COLUMNS or name.startswith(META_PREFIX) else name


def song_id_for(rel_path: str) -> str:
    """Stable song id of a path relative to the catalogue root: POSIX, extension removed."""
    p = PurePosixPath(rel_path.replace(os.sep, "/"))
    return str(p.with_suffix(""))


@dataclass
class Catalogue:
    """A validated list of songs.

    Attributes
    ----------
    songs : DataFrame, one row per song, sorted by ``song_id``; columns ``song_id``, ``path`` (absolute),
        ``rel_path``, ``singer`` and then the metadata columns in manifest order, under their stored names
        (:func:`stored_name`).
    root : the folder song paths are relative to.
    source : the folder or manifest file the catalogue was read from.
    metadata : {name the user gave: stored column name}, in manifest order.
    """

    songs: pd.DataFrame
    root: Path
    source: Path
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def open(cls, source: str | Path, *, check_files: bool = True) -> "Catalogue":
        """Read a catalogue folder or manifest (CSV/Parquet), chosen by what ``source`` is."""
        source = Path(source)
        if not source.exists():
            raise SingrecError("catalogue not found", source)
        if source.is_dir():
            manifest = source / "manifest.csv"
            if manifest.is_file():  # a synthesized catalogue: prefer its manifest (has metadata)
                return cls.from_manifest(manifest, check_files=check_files)
            return cls.from_folder(source)
        return cls.from_manifest(source, check_files=check_files)

    @classmethod
    def from_folder(cls, root: str | Path) -> "Catalogue":
        """Scan ``<root>/<singer>/<song>.<ext>``; other files and deeper folders are reported as problems."""
        root = Path(root).resolve()
        if not root.is_dir():
            raise SingrecError("catalogue folder not found", root)
        rows, problems = [], []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(root)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = (rel_dir / name).as_posix()
                depth = len(rel_dir.parts)
                if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                    if depth >= 1:  # stray non-audio files at the top (README, manifest) are fine
                        problems.append(f"{rel}: unsupported extension {Path(name).suffix!r}")
                    continue
                if depth != 1:
                    problems.append(f"{rel}: expected <singer>/<song>{Path(name).suffix}, found at depth {depth}")
                    continue
                rows.append({"path": str(root / rel), "singer": rel_dir.parts[0], "rel_path": rel})
        if not rows and not problems:
            raise SingrecError(f"no audio files found (expected <singer>/<song>.<{'|'.join(e[1:] for e in AUDIO_EXTENSIONS)}>)", root)
        df = pd.DataFrame(rows, columns=["path", "singer", "rel_path"])
        return cls._validated(df, root=root, source=root, problems=problems, check_files=False)

    @classmethod
    def from_manifest(cls, manifest: str | Path, *, check_files: bool = True) -> "Catalogue":
        """Read a CSV/Parquet manifest; relative paths are resolved against the manifest's folder."""
        manifest = Path(manifest).resolve()
        if manifest.suffix.lower() not in MANIFEST_SUFFIXES:
            raise SingrecError(f"unsupported manifest type {manifest.suffix!r} (use .csv or .parquet)", manifest)
        try:
            if manifest.suffix.lower() == ".csv":
                df = pd.read_csv(manifest, dtype={"path": str, "singer": str}, keep_default_na=False,
                                 na_values=[""])
            else:
                df = pd.read_parquet(manifest)
        except Exception as exc:  # pandas/pyarrow raise many types for malformed files
            raise SingrecError(f"cannot read manifest ({type(exc).__name__}: {exc})", manifest) from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise SingrecError(f"manifest lacks required column(s) {missing}; it has {list(df.columns)}", manifest)
        names = [str(c) for c in df.columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:  # only possible in a Parquet file written with non-string names (1 and "1")
            raise SingrecError(f"manifest has several columns named {dup}", manifest)
        metadata = {n: stored_name(n) for n in names if n not in REQUIRED_COLUMNS}
        df = df.set_axis(names, axis=1).rename(columns=metadata)
        root = manifest.parent
        problems = []
        abs_paths, rel_paths = [], []
        for i, raw in enumerate(df["path"].tolist()):
            if not isinstance(raw, str) or not raw.strip():
                problems.append(f"row {i + 2}: empty path")
                abs_paths.append("")
                rel_paths.append("")
                continue
            p = Path(raw)
            full = (p if p.is_absolute() else root / p).resolve()
            abs_paths.append(str(full))
            try:
                rel_paths.append(full.relative_to(root).as_posix())
            except ValueError:  # outside the manifest folder: keep its absolute path as its id
                rel_paths.append(full.as_posix().lstrip("/"))
        df["path"] = abs_paths
        df["rel_path"] = rel_paths
        return cls._validated(df, root=root, source=manifest, problems=problems, check_files=check_files,
                              metadata=metadata)

    # ------------------------------------------------------------------ validation
    @classmethod
    def _validated(cls, df: pd.DataFrame, *, root: Path, source: Path, problems: list[str],
                   check_files: bool, metadata: dict | None = None) -> "Catalogue":
        problems = list(problems)
        singer = df["singer"]
        for i in df.index[singer.isna() | (singer.astype(str).str.strip() == "")]:
            problems.append(f"{df.at[i, 'rel_path'] or f'row {i + 2}'}: empty singer name")
        df["singer"] = singer.astype(str).str.strip()
        for i, rel in zip(df.index, df["rel_path"]):
            if rel and Path(rel).suffix.lower() not in AUDIO_EXTENSIONS:
                problems.append(f"{rel}: unsupported extension {Path(rel).suffix!r} "
                                f"(supported: {', '.join(AUDIO_EXTENSIONS)})")
            elif rel and check_files and not Path(df.at[i, "path"]).is_file():
                problems.append(f"{rel}: file not found")
        df["song_id"] = [song_id_for(r) if r else "" for r in df["rel_path"]]
        dup = df["song_id"].duplicated(keep=False) & (df["song_id"] != "")
        for sid, group in df[dup].groupby("song_id"):
            problems.append(f"{sid}: duplicate song ({', '.join(sorted(group['rel_path']))})")
        if problems:
            shown = problems[:MAX_LISTED_PROBLEMS]
            more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
            raise SingrecError(f"invalid catalogue, {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more,
                               source)
        metadata = dict(metadata or {})
        df = df[["song_id", "path", "rel_path", "singer", *metadata.values()]].sort_values("song_id", kind="stable")
        return cls(songs=df.reset_index(drop=True), root=root, source=source, metadata=metadata)

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return len(self.songs)

    @property
    def singers(self) -> list[str]:
        return sorted(self.songs["singer"].unique())

    @property
    def metadata_columns(self) -> list[str]:
        """The stored names of the metadata columns (see :func:`stored_name`), in manifest order."""
        return list(self.metadata.values())

    @property
    def renamed(self) -> dict:
        """{name the user gave: stored name} of the metadata columns kept under a derived name."""
        return {n: c for n, c in self.metadata.items() if n != c}

    def singer_table(self) -> pd.DataFrame:
        """One row per singer: song count plus every metadata column that is constant within a singer."""
        g = self.songs.groupby("singer", sort=True)
        table = g.size().rename("n_songs").to_frame()
        for col in self.metadata_columns:
            if (g[col].nunique(dropna=False) <= 1).all():
                table[col] = g[col].first()
        return table.reset_index()

    def fingerprint(self) -> str:
        """sha256 of the song list (ids, singers, file sizes and mtimes): changes when the catalogue does."""
        h = hashlib.sha256()
        for sid, singer, path in zip(self.songs["song_id"], self.songs["singer"], self.songs["path"]):
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{sid}\t{singer}\t{stamp}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        return {"source": str(self.source), "songs": len(self), "singers": len(self.singers),
                "metadata_columns": self.metadata_columns}
