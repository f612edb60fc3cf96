"""Metrics against hand-computed cases."""
import math

import pytest

from forensics import metrics as M


def test_accuracies_reference_convention():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.5, 0.7, 0.5, 0.6, 0.9]
    # fake iff p > 0.5: reals correct 0.1, 0.5 -> 2/3; fakes correct 0.6, 0.9 -> 2/3
    a = M.accuracies(y, p)
    assert a == {"acc": pytest.approx(4 / 6), "r_acc": pytest.approx(2 / 3), "f_acc": pytest.approx(2 / 3)}
    b = M.accuracies(y, p, inclusive=True)  # p >= 0.5: real 0.5 wrong, fake 0.5 right
    assert b["r_acc"] == pytest.approx(1 / 3) and b["f_acc"] == pytest.approx(1.0)


def test_average_precision_hand_computed():
    # ranking: 0.9(f) 0.8(r) 0.7(f) 0.1(r): precision at recalls 0.5, 1.0 = 1, 2/3 -> AP = 0.5*1 + 0.5*2/3
    assert M.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(M.average_precision([1, 1], [0.2, 0.3]))


def test_gmean_threshold_separable_and_noisy():
    y = [0, 0, 1, 1]
    assert M.gmean_threshold(y, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.8)
    # quirk: with p > t, the fake at exactly t is counted wrong; inclusive fixes it
    t = M.gmean_threshold(y, [0.1, 0.2, 0.8, 0.9])
    assert M.accuracies(y, [0.1, 0.2, 0.8, 0.9], t)["f_acc"] == 0.5
    assert M.accuracies(y, [0.1, 0.2, 0.8, 0.9], t, inclusive=True)["f_acc"] == 1.0
    y2 = [0, 0, 0, 1, 1, 1]
    p2 = [0.1, 0.4, 0.35, 0.3, 0.8, 0.9]
    t2 = M.gmean_threshold(y2, p2)
    # best G-mean: TPR 2/3 at FPR 0 (t=0.8, gmean .816) vs TPR 1 at FPR 2/3 (t=.3, gmean .577)
    assert t2 == pytest.approx(0.8)
    with pytest.raises(ValueError):
        M.gmean_threshold([1, 1], [0.1, 0.2])


def test_oracle_threshold():
    assert M.oracle_threshold([0, 0, 1, 1], [0.1, 0.3, 0.5, 0.9]) == pytest.approx(0.4)
    # overlap: candidates in order r(0.2), r(0.6), f(0.4), f(0.9); acc(>=0.2)=.5, (>=.6)=.75, (>=.4)=.75, (>=.9)=.75
    # ties go to the later candidate -> 0.9
    assert M.oracle_threshold([0, 0, 1, 1], [0.2, 0.6, 0.4, 0.9]) == pytest.approx(0.9)


def test_binary_metrics_and_mean_row():
    m = M.binary_metrics([0, 1, 1], [0.2, 0.6, 0.4])
    assert m["n_real"] == 1 and m["n_fake"] == 2 and m["threshold"] == 0.5
    assert m["y_fake_mean"] == pytest.approx(0.5) and m["y_fake_std"] == pytest.approx(0.1)
    row = M.mean_row({"a": {"ap": 1.0, "acc": 0.5, "n_real": 3}, "b": {"ap": 0.5, "acc": float("nan"), "n_real": 1}})
    assert row == {"ap": 0.75, "acc": 0.5}
    with pytest.raises(ValueError):
        M.accuracies([0, 2], [0.1, 0.2])
