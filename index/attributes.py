"""Voice attribute columns of an index: predicted gender and measured range, per song and per singer.

``add_voice_attributes`` is the indexer's last stage before the map (``index/build.py``); the computation is in
:mod:`encoders.voice`. Columns (songs.parquet and singers.parquet):

- ``gender_p``: probability of ``f`` of the singer, the mean of its songs' probabilities; a song carries its singer's
  (gender belongs to the singer: all its songs get one answer from all the evidence, not each its own guess);
  ``gender_pred``: ``f`` / ``m``;
  ``gender_source``: ``predicted``, or ``label`` for singers whose gender the catalogue gave when the classifier
  was fitted on the catalogue's own labels (``--fit-gender COL``). A catalogue's own ``gender`` column is never
  touched.
- ``range_low_midi`` / ``range_centre_midi`` / ``range_high_midi``: the 5th / 50th / 95th percentile of the sung
  pitch over voiced frames (a singer's: the median over its songs); ``range_low`` / ``range_high``: as note names;
  ``voice_type_pred``: :func:`encoders.voice.voice_type` of the centre and ``gender_pred``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data.audio import load_audio
from data.errors import SingrecError
from encoders.voice import (GenderClassifier, GenderConfig, gender_labels, leave_one_singer_out, note_name,
                            speaker_part, sung_range, voice_type)

log = logging.getLogger(__name__)

RANGE_COLUMNS = ["range_low_midi", "range_centre_midi", "range_high_midi"]
ATTRIBUTE_COLUMNS = ["gender_p", "gender_pred", "gender_source", *RANGE_COLUMNS, "range_low", "range_high",
                     "voice_type_pred"]


def singer_labels(songs: pd.DataFrame, column: str) -> pd.Series:
    """{singer: 'f' / 'm'} of the singers whose songs give one gender in ``column`` (others are unlabelled)."""
    if column not in songs:
        raise SingrecError(f"--fit-gender: the catalogue has no column {column!r}")
    lab = pd.Series(gender_labels(songs[column]), index=songs.index).groupby(songs["singer"]).agg(
        lambda v: v.dropna().iloc[0] if v.dropna().nunique() == 1 else None)
    return lab.dropna()


def check_fit_gender(songs: pd.DataFrame, column: str) -> pd.Series:
    """The singer labels ``--fit-gender`` would fit on; a clear error (before any embedding) if there are none of
    one gender."""
    lab = singer_labels(songs, column)
    missing = {"f", "m"} - set(lab)
    if missing:
        raise SingrecError(f"--fit-gender {column}: {len(lab)} labelled singers, none labelled "
                           f"{' or '.join(sorted(missing))}; a classifier needs labelled singers of both genders")
    return lab


def _ranges(songs: pd.DataFrame, previous: pd.DataFrame | None, measured: dict, progress: bool) -> np.ndarray:
    """(N, 3) range rows of ``songs``: measured while embedding (``measured``, by song id), else reused from
    ``previous`` (same song id), else measured from the audio (chunks of an interrupted build by a singrec that
    did not measure while embedding)."""
    out = np.full((len(songs), 3), np.nan, np.float32)
    known = {}
    if previous is not None and set(RANGE_COLUMNS) <= set(previous.columns):
        known = dict(zip(previous["song_id"], previous[RANGE_COLUMNS].to_numpy(np.float32)))
    known.update(measured)
    todo = [i for i, s in enumerate(songs["song_id"]) if s not in known]
    for i, s in enumerate(songs["song_id"]):
        if s in known:
            out[i] = known[s]
    for i in tqdm(todo, desc="sung range", unit="song", disable=not progress or not todo):
        try:
            out[i] = sung_range(load_audio(songs["path"].iloc[i]))
        except SingrecError as exc:  # read moments ago by the encoders: only a file changed since fails here
            log.warning("no range for %s: %s", songs["path"].iloc[i], exc.reason)
    return out


def _range_columns(rows: np.ndarray) -> dict:
    return {**{c: rows[:, j] for j, c in enumerate(RANGE_COLUMNS)},
            "range_low": [note_name(x) for x in rows[:, 0]], "range_high": [note_name(x) for x in rows[:, 2]]}


def add_voice_attributes(songs: pd.DataFrame, singers: pd.DataFrame, timbre_vectors: np.ndarray, *,
                         classifier: GenderClassifier | None, fit_gender: str | None = None,
                         previous: pd.DataFrame | None = None, measured: dict | None = None,
                         progress: bool = True
                         ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Songs and singers tables with the attribute columns (module docstring) added, and what index.json records.

    Parameters
    ----------
    songs, singers : the index's tables (songs carry ``song_id, singer, path``)
    timbre_vectors : (N, d) the songs' fused timbre vectors, rows as ``songs``
    classifier : the gender classifier (e.g. the shipped ``gender.pt``); ignored with ``fit_gender``
    fit_gender : a column of the catalogue with the gender of some singers: a classifier is fitted on them
    previous : the previous index's songs table, whose measured ranges are reused by song id
    measured : {song id: (3,) sung range} measured while the songs were embedded; the songs neither here nor in
        ``previous`` are measured from their audio
    """
    speaker = speaker_part(timbre_vectors) if classifier is not None or fit_gender else None
    info: dict = {}
    labels = pd.Series(dtype=object)
    if fit_gender:
        labels = check_fit_gender(songs, fit_gender)
        known = songs["singer"].isin(labels.index).to_numpy()
        y = songs.loc[known, "singer"].map(labels).to_numpy() == "f"
        cfg = GenderConfig(speaker_key=getattr(classifier, "cfg", GenderConfig()).speaker_key)
        classifier = GenderClassifier.fit(speaker[known], y, cfg)
        loso = leave_one_singer_out(speaker[known], y, songs.loc[known, "singer"].to_numpy(), cfg)
        info["gender"] = {"fitted_on": fit_gender, "labelled_singers": int(len(labels)),
                          "labelled_songs": int(known.sum()), "loso_singer_accuracy": loso}
        log.info("gender classifier fitted on %d labelled singers (%s); leave-one-singer-out accuracy %.3f",
                 len(labels), fit_gender, loso)
    elif classifier is not None:
        info["gender"] = {"classifier": getattr(classifier, "checkpoint_path", None),
                          "sha256": getattr(classifier, "checkpoint_sha256", None)}
    songs, singers = songs.copy(), singers.copy()
    if classifier is not None:
        p = classifier.predict_proba(speaker)
        singer_p = pd.Series(p, index=songs.index).groupby(songs["singer"]).mean()
        for table in (songs, singers):
            table["gender_p"] = table["singer"].map(singer_p).astype(np.float32)
            given = table["singer"].map(labels)
            table["gender_pred"] = np.where(given.notna(), given, np.where(table["gender_p"] > 0.5, "f", "m"))
            table["gender_source"] = np.where(given.notna(), "label", "predicted")
    rows = _ranges(songs, previous, measured or {}, progress)
    for c, v in _range_columns(rows).items():
        songs[c] = v
    singer_rows = pd.DataFrame(rows, columns=RANGE_COLUMNS).groupby(songs["singer"].to_numpy()).median()
    singer_rows = singer_rows.reindex(singers["singer"]).to_numpy(np.float32)
    for c, v in _range_columns(singer_rows).items():
        singers[c] = v
    for table in (songs, singers):
        g = table["gender_pred"] if "gender_pred" in table else [None] * len(table)
        table["voice_type_pred"] = [voice_type(c, x) for c, x in zip(table["range_centre_midi"], g)]
    info["range"] = {"percentiles": [5, 50, 95], "songs_measured": int(np.isfinite(rows[:, 1]).sum())}
    return songs, singers, info


def load_gender_classifier(checkpoints: str | Path | None, timbre) -> GenderClassifier | None:
    """The ``gender.pt`` of a checkpoint folder, else the shipped one (it reads only the speaker vectors, which do
    not depend on the TDNN); None when it reads other speaker vectors than ``timbre``'s."""
    from encoders.checkpoint import CHECKPOINT_DIR, load_encoder

    path = Path(checkpoints or CHECKPOINT_DIR) / "gender.pt"
    if not path.is_file():
        path = CHECKPOINT_DIR / "gender.pt"
    clf = load_encoder(path, kind="gender")
    want, have = clf.cfg.speaker_key, getattr(timbre, "speaker_key", "")
    if want != have:
        log.warning("%s reads other speaker vectors (%s) than this timbre encoder's (%s): no predicted gender "
                    "(refit it with `singrec train CATALOGUE --encoder gender`, or use --fit-gender)", path,
                    want[:20], have[:20] or "none")
        return None
    return clf
