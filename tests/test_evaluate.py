"""``singrec evaluate`` on any labelled catalogue: metrics with known answers, own recording excluded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import app
from recsys.evaluate import agreement_at_k, centroid_ranker, mean_average_precision, singer_top1


def test_own_recording_is_excluded_from_the_candidates():
    # rows 0, 1: two clips of one recording by a; row 2: another recording by a; row 3: the only one by b.
    # cosines: r0.r1 = 1, r0.r2 = 0.6, r0.r3 = 0.8, r2.r3 = 0.96
    emb = np.array([[1, 0], [1, 0], [0.6, 0.8], [0.8, 0.6]], np.float32)
    singers, recordings = ["a", "a", "a", "b"], ["r1", "r1", "r2", "r3"]
    # each row its own recording: rows 0 and 1 find each other, row 2 finds b; row 3 has no other b (skipped)
    assert singer_top1(emb, singers) == pytest.approx(2 / 3)
    # grouped: rows 0 and 1 may not use each other and find b (0.8 > 0.6); row 2 finds b (0.96)
    assert singer_top1(emb, singers, exclude=recordings) == 0.0
    ap_row2 = np.mean([1 / 2, 2 / 3])  # ranking b, a, a
    assert mean_average_precision(emb, singers, exclude=recordings) == pytest.approx(np.mean([0.5, 0.5, ap_row2]))


def test_agreement_and_centroid_ranking():
    values = pd.Series({"a": "f", "b": "f", "c": "m", "d": None})
    ranks = {"a": ["b", "c"], "b": ["c", "d"], "c": ["a", "b"]}
    assert agreement_at_k(ranks.get, values, k=2) == pytest.approx(np.mean([0.5, 0.0, 0.0]))
    assert agreement_at_k(ranks.get, values, k=1) == pytest.approx(np.mean([1.0, 0.0, 0.0]))
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    rank = centroid_ranker(["x", "x", "y", "z"], emb)
    assert rank("y") == ["z", "x"] and rank("x")[0] == "z"


@pytest.fixture(scope="module")
def twin_catalogue(tiny_catalogue, tmp_path_factory):
    """The tiny catalogue plus an exact copy of every file (same singer), with a ``gender`` column: singers 0 and
    1 'f', the others 'm'. Returns (folder, manifest rows)."""
    root = tmp_path_factory.mktemp("twins")
    src = pd.read_csv(tiny_catalogue)
    rows = []
    for _, r in src.iterrows():
        for copy in ("", "-copy"):
            rel = f"audio/{r['singer']}/{Path(r['path']).stem}{copy}.flac"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tiny_catalogue.parent / r["path"], root / rel)
            rows.append({"path": rel, "singer": r["singer"], "song": f"{r['singer']}/{r['path']}"})
    man = pd.DataFrame(rows)
    singers = sorted(man["singer"].unique())
    man["gender"] = man["singer"].map({s: "f" if i < 2 else "m" for i, s in enumerate(singers)})
    return root, man


def _evaluate(root, man, name, index_root, args=()):
    from index.build import build_catalogue_index

    man.to_csv(root / f"{name}.csv", index=False)
    out = index_root / name
    build_catalogue_index(root / f"{name}.csv", out, checkpoints=index_root.parent / "ck", progress=False)
    res = CliRunner().invoke(app, ["evaluate", str(out), "--json", "--k", "2", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_evaluate_groups_clips_of_a_recording(twin_catalogue, tiny_checkpoints, tiny_index, tmp_path):
    root, man = twin_catalogue
    shutil.copytree(tiny_checkpoints, tmp_path / "ck")
    (tmp_path / "idx").mkdir()
    # each file its own recording: every file's nearest other file is its exact copy, by the same singer
    alone = _evaluate(root, man.drop(columns="song"), "alone", tmp_path / "idx", ["--agree", "gender", "--baseline"])
    assert alone["timbre_singer_top1"] == 1.0 and alone["mfcc_singer_top1"] == 1.0
    assert alone["recordings"] == alone["songs"] == len(man)
    # a file and its copy are one recording: the copy is not a candidate, so the figure is the one of the
    # catalogue without copies (its other songs are there twice, which changes no nearest neighbour's singer)
    grouped = _evaluate(root, man, "grouped", tmp_path / "idx", ["--agree", "gender"])
    assert grouped["recordings"] == len(man) // 2
    originals = json.loads(CliRunner().invoke(app, ["evaluate", str(tiny_index), "--json"]).stdout)
    assert grouped["timbre_singer_top1"] == originals["timbre_singer_top1"]
    assert grouped["melody_singer_top1"] == originals["melody_singer_top1"] < 1.0  # copies would give 1.0
    for m in (alone, grouped):
        for key in ("agree@2_gender", "agree@2_gender_timbre_only"):
            assert 0.0 <= m[key] <= 1.0
    assert 0.0 <= alone["agree@2_gender_mfcc"] <= 1.0
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "idx" / "grouped"), "--agree", "genre"])
    assert res.exit_code != 0 and "no metadata column 'genre'" in res.output
