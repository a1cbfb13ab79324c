"""The embedding stage of ``singrec index`` on Ray Data (``--engine ray``), for catalogues that outgrow one machine.

It writes the same ``build/part-*.npz`` chunks as the in-process engine (:func:`index.build.embed_chunks`), so
everything after embedding (singer vectors, FAISS, map, tables, ``failures.csv``) is one code path:

- each chunk still to do is one input row; a pool of actors (``ActorPoolStrategy(size=actors)``, one CPU and one
  torch thread each, the encoders loaded once per actor) embeds a chunk with the function the build passes
  (:func:`index.build.embed_files`), exactly as the in-process engine does, so the vectors are bit-identical,
  and returns one row per song (``song_id, path, chunk, position, duration, timbre, melody, error``). A file
  that cannot be read gives a row with its reason in ``error`` instead of aborting the dataset; those rows
  become ``failures.csv`` rows.
- the song rows stream to Parquet in ``build/ray/``. Ray writes part files under their final names, so a run
  that resumes reads every readable part (keyed by absolute path and song id), sets unreadable (torn) parts aside
  in ``build/torn/``, and embeds only the chunks not complete there.
- at the end the rows are grouped into the chunk files the shared gather step reads.

On one 2-core machine Ray costs ~5 s to start and ~2 GB of memory (BENCHMARKS.md, "Ray engine"): it is
for clusters; the in-process engine is the default. A local instance keeps one logical CPU beyond the actors,
and the write tasks ask for half a CPU, or the actors hold every CPU and the pipeline never starts.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import SingrecError
from index.store import CHUNK_KINDS, KINDS, RANGE_DIM, write_npz

log = logging.getLogger(__name__)

INSTALL_HINT = "the Ray engine needs Ray: pip install singrec[ray]"
ROW_COLUMNS = ["song_id", "path", "chunk", "position", "duration", *CHUNK_KINDS, "error"]
PACKAGES = ["data", "encoders", "index", "recsys", "app"]  # uploaded to a cluster (runtime_env py_modules)


def import_ray():
    """``ray`` (with Ray Data), or a SingrecError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SingrecError(INSTALL_HINT) from None
    return ray


def checkpoint_bytes(encoders: dict) -> dict[str, bytes]:
    """Each encoder's checkpoint file, as the actors get it (the modules themselves do not pickle, and a path
    need not exist on the other machines of a cluster)."""
    out = {}
    for k in KINDS:
        path = getattr(encoders[k], "checkpoint_path", None)
        if not path or not Path(path).is_file():
            raise SingrecError(f"the Ray engine sends the encoders to its workers as checkpoint files; the {k} "
                               "encoder has none (load it with encoders.checkpoint.load_encoder)")
        out[k] = Path(path).read_bytes()
    return out


class ChunkEmbedder:
    """Ray Data actor: loads the encoders once (from checkpoint bytes), one torch thread; embeds one chunk per
    call into per-song rows."""

    def __init__(self, checkpoints: dict[str, bytes], sha256: dict[str, str], embed):
        import tempfile

        from encoders.base import one_thread_per_process
        from encoders.checkpoint import load_encoder

        one_thread_per_process()
        self.embed = embed
        self.encoders = {}
        with tempfile.TemporaryDirectory(prefix="singrec-ray-") as tmp:
            for k, data in checkpoints.items():
                (Path(tmp) / f"{k}.pt").write_bytes(data)
                self.encoders[k] = load_encoder(Path(tmp) / f"{k}.pt", kind=k)
                if self.encoders[k].checkpoint_sha256 != sha256[k]:
                    raise SingrecError(f"the {k} checkpoint changed on its way to a Ray worker")

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([embed_chunk_rows(int(r.chunk), list(r.song_ids), list(r.paths), self.encoders, self.embed)
                          for r in batch.itertuples()], ignore_index=True)


def embed_chunk_rows(chunk: int, song_ids: list[str], paths: list[str], encoders: dict, embed_files) -> pd.DataFrame:
    """One row per song of a chunk: its vectors and duration, or the reason it failed in ``error``.

    The chunk goes through ``embed_files`` (:func:`index.build.embed_files`: ``(vectors, durations, failures)``)
    whole, the in-process engine's unit, hence the same bits; should that raise, each song is embedded alone and
    an exception is that song's ``error``."""
    try:
        results = [embed_files(paths, encoders)]
        index_of = [list(range(len(paths)))]
    except Exception:  # noqa: BLE001 -- one bad song must not abort the dataset
        log.exception("chunk %d failed as a whole; embedding its songs one by one", chunk)
        results, index_of = [], []
        for i, p in enumerate(paths):
            try:
                results.append(embed_files([p], encoders))
            except Exception as exc:  # noqa: BLE001
                results.append(({k: np.zeros((0, 1), np.float32) for k in CHUNK_KINDS}, np.zeros(0, np.float32),
                                [(0, f"{type(exc).__name__}: {exc}")]))
            index_of.append([i])
    rows = []
    for (vectors, durations, failures), positions in zip(results, index_of):
        failed = dict(failures)
        ok = [i for i in range(len(positions)) if i not in failed]
        for j, i in enumerate(ok):
            pos = positions[i]
            rows.append({"song_id": song_ids[pos], "path": paths[pos], "chunk": chunk, "position": pos,
                         "duration": float(durations[j]), **{k: vectors[k][j].tolist() for k in CHUNK_KINDS},
                         "error": None})
        for i, reason in failed.items():
            pos = positions[i]
            rows.append({"song_id": song_ids[pos], "path": paths[pos], "chunk": chunk, "position": pos,
                         "duration": float("nan"), **{k: [] for k in CHUNK_KINDS}, "error": str(reason)})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def read_rows(rows_dir: Path, torn_dir: Path) -> pd.DataFrame:
    """Every song row in the readable Parquet parts of ``rows_dir``, one per (absolute path, song id); a part that
    cannot be read (torn by a kill mid-write) is moved to ``torn_dir`` and its songs count as not done."""
    import pyarrow.parquet as pq

    tables = []
    for part in sorted(rows_dir.glob("*.parquet")) if rows_dir.is_dir() else []:
        try:
            tables.append(pq.read_table(part).to_pandas())
        except Exception as exc:  # noqa: BLE001 -- any unreadable part is set aside, whatever pyarrow says
            log.warning("setting aside an unreadable part %s (%s)", part, exc)
            torn_dir.mkdir(parents=True, exist_ok=True)
            os.replace(part, torn_dir / part.name)
    if not tables:
        return pd.DataFrame(columns=ROW_COLUMNS)
    rows = pd.concat(tables, ignore_index=True)
    rows["path"] = [os.path.abspath(p) for p in rows["path"]]
    return rows.drop_duplicates(["path", "song_id"], keep="last").reset_index(drop=True)


def write_chunk(part: Path, rows: pd.DataFrame, dims: dict) -> None:
    """Write a chunk's song rows (in chunk order) as the in-process engine's ``part-*.npz``."""
    rows = rows.sort_values("position")
    ok, bad = rows[rows["error"].isna()], rows[rows["error"].notna()]
    write_npz(part, song_ids=np.array(ok["song_id"].tolist()), durations=ok["duration"].to_numpy(np.float32),
              failed_ids=np.array(bad["song_id"].tolist()), failed_reasons=np.array(bad["error"].tolist()),
              **{f"vec_{k}": (np.array(ok[k].tolist(), np.float32) if len(ok) else np.zeros((0, dims[k]), np.float32))
                 for k in CHUNK_KINDS})


def _start_ray(ray, address: str, actors: int | None) -> tuple[int, bool]:
    """Connect to (or start) Ray; returns (actors, whether this call started the connection)."""
    if ray.is_initialized():  # the caller's own ray.init (Python API): use it, leave it running
        started = False
    elif address == "local":
        n = actors or max(1, (os.cpu_count() or 2) - 1)
        # a private instance (a plain ray.init() would join a cluster left in Ray's temp folder), with one
        # logical CPU beyond the actors for the tasks that feed and write them
        ray.init(address="local", num_cpus=n + 1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        started = True
    else:
        # joining a cluster: its resources are its own (no num_cpus); workers import singrec from these folders
        root = Path(__file__).resolve().parent.parent
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"py_modules": [str(root / p) for p in PACKAGES]})
        started = True
    if not actors:
        actors = max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    return actors, started


def embed_chunks_on_ray(todo: pd.DataFrame, build_dir: Path, chunk_size: int, encoders: dict, embed_files, *,
                        progress: bool = True, address: str = "local",
                        actors: int | None = None) -> tuple[int, int, float]:
    """Ray Data counterpart of :func:`index.build.embed_chunks`: afterwards every ``build_dir/part-*.npz`` of
    ``todo`` exists. Returns ``(songs embedded, songs resumed, seconds of audio embedded)``.

    Parameters
    ----------
    embed_files : :func:`index.build.embed_files` (passed in: this module sits beside the build, not below it)
    address : "local" (a private instance on this machine, ``actors`` + 1 CPUs), "auto" (the cluster this
        machine belongs to, started with ``ray start``) or "ray://HOST:10001" (a remote cluster's client port)
    actors : embedding actors (default: one per CPU, less one)
    """
    ray = import_ray()
    n_chunks = (len(todo) + chunk_size - 1) // chunk_size
    chunks = [todo.iloc[c * chunk_size:(c + 1) * chunk_size] for c in range(n_chunks)]
    rows_dir, torn_dir = build_dir / "ray", build_dir / "torn"
    dims = {**{k: int(encoders[k].dim) for k in KINDS}, "range": RANGE_DIM}
    missing = [c for c in range(n_chunks) if not (build_dir / f"part-{c:05d}.npz").is_file()]
    n_resumed = len(todo) - sum(len(chunks[c]) for c in missing)

    def complete(rows: pd.DataFrame) -> tuple[list[int], pd.DataFrame]:
        """Write the chunk files whose songs all have rows; returns (chunks left, rows of the chunks written)."""
        where = {key: i for i, key in enumerate(zip(rows["path"], rows["song_id"]))}  # one row per key
        left, written = [], []
        for c in missing:
            at = [where.get(k) for k in zip((os.path.abspath(p) for p in chunks[c]["path"]), chunks[c]["song_id"])]
            if None in at:
                left.append(c)
                continue
            mine = rows.iloc[at]
            write_chunk(build_dir / f"part-{c:05d}.npz", mine, dims)
            written.append(mine)
        return left, (pd.concat(written) if written else rows.iloc[:0])

    before = read_rows(rows_dir, torn_dir)
    missing, done = complete(before)
    n_resumed += len(done)
    if not missing:
        return 0, n_resumed, 0.0

    blobs = checkpoint_bytes(encoders)
    t0 = time.perf_counter()
    actors, started = _start_ray(ray, address, actors)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        items = [{"chunk": c, "song_ids": chunks[c]["song_id"].tolist(),
                  "paths": [os.path.abspath(p) for p in chunks[c]["path"]]} for c in missing]
        log.info("ray: %d chunks on %d actors (started in %.1f s)", len(items), actors, time.perf_counter() - t0)
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(ChunkEmbedder, batch_size=1, batch_format="pandas", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            fn_constructor_kwargs={"checkpoints": blobs, "sha256": {
                                k: encoders[k].checkpoint_sha256 for k in KINDS}, "embed": embed_files})
        ds.write_parquet(str(rows_dir), ray_remote_args={"num_cpus": 0.5})
    finally:
        if started:
            ray.shutdown()
    missing_after, new = complete(read_rows(rows_dir, torn_dir))
    if missing_after:
        raise SingrecError(f"the Ray pipeline ended without rows for {len(missing_after)} chunk(s) "
                           f"(first: songs {chunks[missing_after[0]]['song_id'].tolist()[:3]}...)", build_dir)
    ok = new[new["error"].isna()]
    return len(ok), n_resumed, float(ok["duration"].sum())

