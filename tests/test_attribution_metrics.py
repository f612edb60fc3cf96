"""Open-set attribution metrics and probes against hand-computed cases (docs/attribution.md)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from forensics.attribution import metrics as M
from forensics.attribution.classifiers import KNNProbe, LogRegProbe, c_grid, k_grid, make_probe


def curve_oscr(known, correct, unknown):
    """Independent OSCR: trapezoids over the (FPR, CCR) points of every threshold (score >= θ)."""
    known, unknown, correct = np.asarray(known, float), np.asarray(unknown, float), np.asarray(correct, bool)
    pts = [(0.0, 0.0)]
    for th in sorted(set(known) | set(unknown), reverse=True):
        pts.append((np.mean(unknown >= th), np.sum(correct & (known >= th)) / len(known)))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))


def test_auroc_ties_half_and_reference():
    known, unknown = [0.9, 0.5, 0.3], [0.5, 0.1]
    # pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5 (tie), 0.5>0.1, 0.3<0.5, 0.3>0.1 -> 4 wins + 1 tie of 6
    assert M.auroc(known, unknown) == pytest.approx(4.5 / 6)
    assert M.auroc(known, unknown, ties="reference") == pytest.approx(4 / 6)
    assert M.auroc(known, unknown) == pytest.approx(roc_auc_score([1, 1, 1, 0, 0], known + unknown))
    # k=1 kNN: every score 1.0 -> chance with ties as halves, 0 in the reference (A.6 quirk)
    assert M.auroc([1.0] * 4, [1.0] * 3) == 0.5
    assert M.auroc([1.0] * 4, [1.0] * 3, ties="reference") == 0.0


def test_auroc_matches_sklearn_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    k, u = rng.integers(0, 5, 40) / 4, rng.integers(0, 5, 30) / 4
    assert M.auroc(k, u) == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[k, u]))


def test_tnr_at_tpr95_hand_case():
    known = np.arange(1, 21, dtype=float)   # 20 knowns: keeping 95% = 19 of them -> threshold 2
    unknown = [0.5, 1.5, 2.0, 3.0]          # below 2: 0.5, 1.5 (2.0 is accepted)
    assert M.tnr_at_tpr(known, unknown) == 0.5
    assert M.tnr_at_tpr(known, unknown, tpr=1.0) == 0.25  # threshold 1
    assert M.tnr_at_tpr([1.0] * 5, [1.0] * 5) == 0.0     # all tied: nothing rejected


def test_oscr_hand_cases_and_edges():
    # correct knowns 0.9 (beats both unknowns) and 0.4 (beats 0.2 only): 3 of 3x2 pairs
    assert M.oscr([0.9, 0.6, 0.4], [True, False, True], [0.6, 0.2]) == pytest.approx(0.5)
    assert M.oscr([0.9, 0.6, 0.4], [True, False, True], [0.6, 0.2]) == pytest.approx(
        curve_oscr([0.9, 0.6, 0.4], [True, False, True], [0.6, 0.2]))
    assert M.oscr([0.9, 0.8], [False, False], [0.1]) == 0.0          # nothing correct
    assert M.oscr([0.9, 0.8], [True, True], [0.1, 0.2]) == 1.0       # perfect
    assert M.oscr([0.5] * 4, [True] * 4, [0.5] * 3) == 0.5           # all tied: diagonal
    assert M.oscr([0.5] * 4, [True, True, False, False], [0.5] * 3) == 0.25
    with pytest.raises(ValueError):
        M.oscr([0.5], [True], [])
    with pytest.raises(ValueError):
        M.oscr([0.5, 0.4], [True], [0.1])


def test_oscr_equals_threshold_curve_and_bounds_on_random_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        k, u = rng.integers(0, 6, 25) / 5, rng.integers(0, 6, 15) / 5
        ok = rng.random(25) < 0.7
        o = M.oscr(k, ok, u)
        assert o == pytest.approx(curve_oscr(k, ok, u))
        assert o <= ok.mean() + 1e-12
        # OSCR = accuracy x AUROC(correct knowns vs unknowns)
        assert o == pytest.approx(ok.mean() * M.auroc(k[ok], u))


def test_oscr_reference_off_by_one():
    # perfect separation, 4 correct knowns above 3 unknowns: the reference's CCR is counted one position
    # late, so its curve reaches CCR 1 only at FPR 1/3: area 1 - (1/3)(1 - 3/4)/2 = 23/24 (hand-traced)
    known, unknown = [0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3]
    assert M.oscr_reference(known, [True] * 4, unknown) == pytest.approx(23 / 24)
    assert M.oscr(known, [True] * 4, unknown) == 1.0


def test_closed_set_and_open_set_bundle():
    y, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    out = M.closed_set(y, p, 3)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class0 P=1/2 R=1/2 -> .5; class1 P=2/3 R=1 -> .8; class2 0 -> macro .4333
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert out["recall"] == pytest.approx([0.5, 1.0, 0.0])
    proba = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    res = M.open_set(proba, [0, 1, 1], proba.max(1), [0.5, 0.9])
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["auroc"] == pytest.approx(M.auroc([0.7, 0.8, 0.6], [0.5, 0.9]))
    assert res["oscr"] == pytest.approx(M.oscr([0.7, 0.8, 0.6], [True, True, False], [0.5, 0.9]))


def test_reference_grids():
    c = c_grid()
    assert len(c) == 45 and c[0] == pytest.approx(1e-6) and c[-1] == pytest.approx(1e5)
    assert c[4] == pytest.approx(1e-5)  # 4 values per decade
    assert k_grid() == [1, 3, 5, 7, 9, 11, 13, 15, 17, 20]


def test_knn_votes_hand_case():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 1, 1])
    q = np.array([[2.0, 0.2]])
    sims = np.array([2.0, 0.2, 2.2]) / (np.linalg.norm([2.0, 0.2]) * np.array([1.0, 1.0, np.sqrt(2)]))
    proba, score = KNNProbe(param=2).fit(x, y).predict(q)          # neighbours: 0 (.995) and 2 (.774)
    assert proba[0] == pytest.approx([sims[0] / (sims[0] + sims[2]), sims[2] / (sims[0] + sims[2])])
    assert score[0] == pytest.approx(proba[0].max())
    _, s1 = KNNProbe(param=1).fit(x, y).predict(np.random.default_rng(0).normal(size=(5, 2)))
    assert np.all(s1 == 1.0)                                         # k = 1: every max vote share is 1
    _, sim_score = KNNProbe(param=2, score="similarity").fit(x, y).predict(q)
    assert sim_score[0] == pytest.approx((sims[0] + sims[2]) / 2)
    queries = np.random.default_rng(1).normal(size=(7, 2))
    probe = KNNProbe(param=2).fit(x, y)
    whole, chunked = probe.neighbours(queries), probe.neighbours(queries, chunk=3)
    assert np.array_equal(whole[1], chunked[1]) and np.allclose(whole[0], chunked[0])


def test_logreg_probe_separable_and_probabilities():
    rng = np.random.default_rng(0)
    centres = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4]], float)
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(0, 0.3, (60, 3))
    probe = make_probe("logreg", 1.0, max_iter=200, standardize=True, score="ignored-by-logreg").fit(x, y)
    assert isinstance(probe, LogRegProbe)
    proba, score = probe.predict(x)
    assert np.allclose(proba.sum(1), 1.0) and np.array_equal(proba.argmax(1), y)
    assert np.allclose(score, proba.max(1))
