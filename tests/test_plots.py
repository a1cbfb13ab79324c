"""benchmarks/plots.py: its retrieval curves agree with recsys.evaluate, and each picture is drawn from its JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from recsys.evaluate import mean_average_precision, singer_top1

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plots():
    spec = importlib.util.spec_from_file_location("bench_plots", ROOT / "benchmarks" / "plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curves_agree_with_recsys_evaluate(plots):
    rng = np.random.default_rng(0)
    singers = np.repeat(np.arange(6), 8)  # 6 singers x 4 songs x 2 clips
    songs = np.repeat(np.arange(24), 2)
    emb = rng.standard_normal((6, 16))[singers] + 1.2 * rng.standard_normal((48, 16))
    rel, ok = plots.ranked_relevance(emb, singers, songs)
    top = plots.topk_curve(rel, ok)
    assert top[0] == pytest.approx(singer_top1(emb, singers, exclude=songs))
    assert np.all(np.diff(top) >= 0) and top[-1] <= 1.0
    precision, ap = plots.pr_curve(rel, ok)
    assert ap == pytest.approx(mean_average_precision(emb, singers, exclude=songs))
    assert np.all(np.diff(precision) <= 1e-12)  # interpolated precision never rises with recall
    # the query's own song never counts: a song's two clips alone would make every top-1 a hit
    twins = np.repeat(rng.standard_normal((24, 16)), 2, axis=0)
    rel, ok = plots.ranked_relevance(twins, singers, songs)
    assert plots.topk_curve(rel, ok)[0] < 0.6


def test_pictures_from_json(plots, tmp_path):
    stages = {"decode FLAC (load_audio)": {"s_per_song": 0.04, "x_real_time": 4500.0},
              "end to end: files -> timbre + melody vectors (embed_songs)": {"s_per_song": 0.36, "x_real_time": 500.0}}
    (tmp_path / "t.json").write_text(json.dumps({"stages": stages, "threads": 1, "commit": "abc1234"}))
    rows = [{"songs": n, "p50_ms": p, "p99_ms": 2 * p, "runs_ms": [[p, 2 * p], [p * 1.1, 2.2 * p]]}
            for n, p in ((900, 1.0), (10_000, 5.0))]
    (tmp_path / "q.json").write_text(json.dumps({"rows": rows, "commit": "abc1234", "load": [2.0, 2, 2],
                                                 "queries": 10, "repeats": 2}))
    curves = {"k": plots.KS.tolist(), "recall_levels": np.linspace(0, 1, 21).tolist(), "clips": 10, "songs": 5,
              "singers": 3, "curves": {name: {"topk": np.linspace(0.9, 1, 20).tolist(),
                                              "precision": np.linspace(1, 0.2, 21).tolist(), "map": 0.5,
                                              "queries": 10}
                                       for name in ("singrec timbre vectors", "GE2E speaker part alone",
                                                    "MFCC-20 mean+std")}}
    (tmp_path / "k.json").write_text(json.dumps(curves))
    plots.plot_throughput(SimpleNamespace(json_in=tmp_path / "t.json", out=tmp_path / "t.png"))
    plots.plot_latency(SimpleNamespace(json_in=tmp_path / "q.json", out=tmp_path / "q.png"))
    plots.plot_topk(SimpleNamespace(dev=tmp_path, from_json=tmp_path / "k.json", out=tmp_path / "k.png"))
    for name in ("t", "q", "k"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
