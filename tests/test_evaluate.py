import numpy as np
import pandas as pd
import pytest

from recsys.evaluate import (ground_truth_neighbours, mean_average_precision, ndcg_at_k, singer_top1,
                             vector_ranking_ndcg)


def test_singer_top1_hand_computed():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.2]], float)
    labels = ["a", "a", "b", "b", "b"]
    # nearest others: 0->1 (a ok), 1->0 (ok), 2->3 (ok), 3->2 (ok), 4->1 (a, wrong)
    assert singer_top1(emb, labels) == pytest.approx(4 / 5)


def test_map_hand_computed_and_exclusion():
    emb = np.array([[1, 0], [0.9, 0.1], [0.7, 0.3], [0, 1]], float)
    labels = np.array([0, 1, 0, 1])
    # query 0: 1(x) 2(v) 3 -> 1/2; query 1: 0(x) 2(x) 3(v) -> 1/3; query 2: 1(x) 0(v) 3 -> 1/2; query 3: 2(x) 1(v) 0 -> 1/2
    assert mean_average_precision(emb, labels) == pytest.approx((0.5 + 1 / 3 + 0.5 + 0.5) / 4)
    # excluding items of the same group removes them from the ranking entirely
    groups = np.array(["g", "g", "h", "h"])
    # cosines: (0,1) .994 (0,2) .919 (0,3) 0 (1,2) .957 (1,3) .110 (2,3) .394
    # query 0 sees 2(v),3 -> 1; query 1 sees 2(x),3(v) -> 1/2; query 2 sees 1(x),0(v) -> 1/2; query 3 sees 1(v),0 -> 1
    assert mean_average_precision(emb, labels, exclude=groups) == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)


def test_ndcg():
    rel = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert ndcg_at_k(["a", "b", "c"], rel, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y", "z"], rel, 3) == 0.0
    worse = ndcg_at_k(["c", "b", "a"], rel, 3)
    assert 0 < worse < 1


def test_ground_truth_neighbours_and_vector_ranking():
    rng = np.random.default_rng(0)
    params = rng.standard_normal((30, 5))
    gt = pd.DataFrame(params, columns=[f"p_{i}" for i in range(5)])
    gt.insert(0, "singer", [f"s{i}" for i in range(30)])
    truth = ground_truth_neighbours(gt, k=10)
    assert len(truth["s0"]) == 10 and max(truth["s0"].values()) == 10.0 and "s0" not in truth["s0"]
    # ranking by the parameters themselves is perfect; a random embedding is much worse
    z = (params - params.mean(0)) / params.std(0)
    # cosine ranking matches euclidean ranking when the vectors have (almost) equal norms: append a big constant
    assert vector_ranking_ndcg(gt["singer"], np.hstack([z, np.full((30, 1), 50.0)]), truth) > 0.9
    assert vector_ranking_ndcg(gt["singer"], rng.standard_normal((30, 5)), truth) < 0.6
