"""Faithfulness metrics on hand-built cases with known answers (forensics.analysis.faithfulness)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from forensics.analysis.faithfulness import (LOCALISATION_METRICS, PerturbationConfig, area, bootstrap_ci,
                                             cascade_groups, cascading_randomisation, chance_levels, localisation,
                                             model_sensitive, perturbation_curves, restored, srg)
from forensics.analysis.faithfulness.perturbation import (gaussian_blur, linear_imputation, morf_order,
                                                          removal_mask, steps_counts)
from torch import nn

from forensics.detectors import Detector, DetectorConfig, FeatureLayer, Preprocessing
from helpers import assert_same_snapshot, snapshot, tiny, tiny_rine


# ---------------------------------------------------------------------------- localisation
def _mask(h=16, w=16):
    m = np.zeros((h, w), bool)
    m[2:8, 3:11] = True
    return m


def test_heatmap_equal_to_the_mask_scores_one_and_its_inverse_zero():
    m = _mask()
    perfect = localisation(m.astype(float), m)
    assert {k: float(v[0]) for k, v in perfect.items()} == dict.fromkeys(LOCALISATION_METRICS, 1.0)
    inverse = localisation((~m).astype(float), m)
    assert {k: float(v[0]) for k, v in inverse.items()} == dict.fromkeys(LOCALISATION_METRICS, 0.0)


def test_hand_computed_values():
    m = np.zeros((2, 2), bool)
    m[0, 0] = True                                      # area 1/4
    h = np.array([[3.0, -5.0], [1.0, 0.0]])             # positive mass 4, 3 of it inside
    out = localisation(h, m)
    assert out["mass_accuracy"][0] == pytest.approx(0.75)
    assert out["rank_accuracy"][0] == 1.0               # top-1 pixel is (0, 0)
    assert out["pointing_game"][0] == 1.0
    assert out["auroc"][0] == pytest.approx(1.0)        # 3 is above all three outside pixels
    h2 = np.array([[1.0, 3.0], [0.0, 2.0]])
    out2 = localisation(h2, m)
    assert out2["mass_accuracy"][0] == pytest.approx(1 / 6)
    assert out2["rank_accuracy"][0] == 0.0 and out2["pointing_game"][0] == 0.0
    assert out2["auroc"][0] == pytest.approx(1 / 3)     # above 1 of 3 outside pixels


def test_random_heatmaps_score_chance():
    rng = np.random.default_rng(0)
    masks = np.stack([_mask() for _ in range(400)])
    heat = rng.random(masks.shape)
    out = localisation(heat, masks)
    chance = chance_levels(masks)
    for k in out:
        assert abs(np.nanmean(out[k]) - chance[k].mean()) < (0.06 if k == "pointing_game" else 0.02), k
    assert chance["mass_accuracy"][0] == pytest.approx(48 / 256)


# ---------------------------------------------------------------------------- perturbation
def region_score(x: torch.Tensor) -> torch.Tensor:
    """A 'model' that reads one region only: the mean of channel 0 over rows/cols 0-7."""
    return x[:, 0, :8, :8].mean((1, 2))


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 3, 32, 32, generator=g)
    x[:, 0, :8, :8] += 2.0                              # the evidence sits in the top-left patch
    return x


def test_morf_of_a_perfect_heatmap_drops_the_logit_first():
    x = _images()
    perfect = torch.zeros(6, 32, 32)
    perfect[:, :8, :8] = 1.0
    cfg = PerturbationConfig(patch=8, steps=4)
    curves = perturbation_curves(region_score, x, perfect, cfg)
    start = region_score(x).numpy()
    for fill, c in curves.items():
        morf, lerf = c["morf"], c["lerf"]
        assert morf.shape == lerf.shape == (6, 5)
        np.testing.assert_allclose(morf[:, 0], start, rtol=1e-6)
        assert (morf[:, 1] < start - 0.5).all(), fill           # the first step removes the evidence
        np.testing.assert_allclose(lerf[:, :4], np.tile(start[:, None], 4), rtol=1e-6)  # kept to the end
        assert (srg(c) > 0.5).all() and (area(morf) < area(lerf)).all()
    # a heatmap pointing away from the evidence gives the opposite
    anti = perturbation_curves(region_score, x, -perfect, cfg, fill_ins=["mean"])
    assert (srg(anti["mean"]) < -0.5).all()


def test_random_heatmaps_have_srg_near_zero():
    x = _images(64, seed=1)
    heat = torch.rand(64, 32, 32, generator=torch.Generator().manual_seed(2))
    c = perturbation_curves(region_score, x, heat, PerturbationConfig(patch=8, steps=4), fill_ins=["mean"])
    est = bootstrap_ci(srg(c["mean"]))
    assert est.contains(0.0), est


def test_patch_order_masks_and_counts():
    heat = torch.zeros(1, 16, 16)
    heat[0, 8:, 8:] = 5.0                                 # patch 3 of 2x2 patches of 8
    heat[0, :8, 8:] = 1.0                                 # patch 1
    order = morf_order(heat, 8)
    assert order[0, :2].tolist() == [3, 1]
    m = removal_mask(order, 1, (16, 16), 8)
    assert m[0, 8:, 8:].all() and m.sum() == 64
    assert steps_counts(4, 2) == [0, 2, 4] and steps_counts(64, 8)[1] == 8
    assert removal_mask(morf_order(torch.rand(2, 10, 10), 4), 9, (10, 10), 4).all()   # border patches too


def test_fill_ins():
    ramp = torch.linspace(-1, 1, 24, dtype=torch.float64).expand(1, 3, 24, 24).clone()
    removed = np.zeros((24, 24), bool)
    removed[6:14, 9:17] = True
    np.testing.assert_allclose(linear_imputation(ramp[0].numpy(), removed), ramp[0].numpy(), atol=1e-10)
    hole = linear_imputation(np.zeros((1, 8, 8)) + 3.0, np.ones((8, 8), bool))
    assert np.all(hole == 3.0)
    flat = torch.full((1, 3, 20, 20), 0.7)
    assert torch.allclose(gaussian_blur(flat, 4.0), flat)


def test_bootstrap_ci():
    est = bootstrap_ci(np.arange(100.0))
    assert est.mean == 49.5 and 43 < est.lo < 49.5 < est.hi < 56 and est.n == 100
    assert bootstrap_ci([2.0, 2.0, np.nan]).format() == "2.000 [2.000, 2.000]"
    assert bootstrap_ci([1.0]).n == 1 and bootstrap_ci([]).n == 0


# ---------------------------------------------------------------------------- randomisation
class SmallCNN(Detector):
    """Three convolutions and a linear head: a fast stand-in for the cascade."""

    def __init__(self):
        super().__init__(DetectorConfig(name="small-test", arch="small", paper="",
                                        preprocessing=Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3)))
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3))).squeeze(1)

    def _feature_layers(self):
        return [FeatureLayer("body.4", 8, {"pre_bn": "body.4"})]

    def gradcam_layers(self):
        return [self.body[4]]


def test_cascade_groups_of_resnet50_head_first():
    names = [n for n, _ in cascade_groups(tiny("resnet50"))]
    assert names == ["net.fc", "net.layer4", "net.layer3", "net.layer2", "net.layer1", "net.bn1", "net.conv1"]


def test_cascade_groups_of_rine_walk_down_the_vit_blocks():
    model = tiny_rine()
    groups = cascade_groups(model)
    names = [n for n, _ in groups]
    blocks = [f"clip.visual.transformer.resblocks.{i}" for i in reversed(range(model.clip.blocks))]
    assert names == ["rine_head.head", "rine_head.proj2", "rine_head.proj1", "rine_head", *blocks, "clip.visual"]
    owned = [id(p) for _, ms in groups for m in ms for p in m.parameters(recurse=False)]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def test_cascading_randomisation_random_control_and_restoration():
    model = SmallCNN().eval()
    names = [n for n, _ in cascade_groups(model, min_groups=3)]
    assert names == ["fc", "body"] or names == ["fc", "body.4", "body.2", "body.0"]
    before = snapshot(model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rnd = cascading_randomisation(model, "random", x, "fake", min_groups=3)
    assert rnd.steps[0] == "trained" and len(rnd.steps) == len(names) + 1
    np.testing.assert_allclose(rnd.spearman, 1.0)
    np.testing.assert_allclose(rnd.spearman_abs, 1.0)
    np.testing.assert_allclose(rnd.ssim, 1.0, atol=1e-6)
    assert not model_sensitive(1.0) and not model_sensitive(0.1, 0.9) and model_sensitive(-0.6, 0.2)
    sal = cascading_randomisation(model, "saliency", x, "fake", min_groups=3)
    assert np.all(sal.spearman[0] == 1.0) and np.nanmean(sal.spearman[-1]) < 0.5
    assert_same_snapshot(before, snapshot(model))


def test_restored_on_error():
    model = torch.nn.Linear(3, 2)
    w = model.weight.detach().clone()
    with pytest.raises(RuntimeError):
        with restored(model):
            with torch.no_grad():
                model.weight.mul_(0)
            raise RuntimeError("interrupted")
    assert torch.equal(model.weight, w)


# ---------------------------------------------------------------------------- against Quantus (optional)
def test_against_quantus():
    """Same inputs, same numbers as Quantus 0.6 (not a dependency: it pulls opencv-python beside our
    opencv-python-headless; run in a separate environment that has it, docs/faithfulness.md)."""
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation
    rng = np.random.default_rng(0)
    masks = np.stack([_mask() for _ in range(5)])[:, None]
    heat = rng.random(masks.shape)                       # non-negative, no ties
    ours = localisation(heat[:, 0], masks[:, 0])
    kw = dict(model=None, x_batch=np.zeros((5, 1, 16, 16)), y_batch=np.zeros(5, int), a_batch=heat,
              s_batch=masks.astype(float))
    for name, metric in (("mass_accuracy", quantus.RelevanceMassAccuracy), ("rank_accuracy",
                         quantus.RelevanceRankAccuracy), ("pointing_game", quantus.PointingGame),
                         ("auroc", quantus.AUC)):
        theirs = metric(abs=False, normalise=False, disable_warnings=True)(**kw)
        np.testing.assert_allclose(ours[name], np.asarray(theirs, float), atol=1e-9, err_msg=name)
    img = rng.normal(size=(3, 12, 12))
    removed = rng.random((12, 12)) < 0.4
    theirs = noisy_linear_imputation(img, np.flatnonzero(removed), noise=0.0)
    np.testing.assert_allclose(linear_imputation(img, removed), theirs, atol=1e-9)


def test_spearman_of_constant_maps():
    from forensics.analysis.faithfulness.randomisation import spearman
    a = np.random.default_rng(0).random((3, 4, 4))
    flat = np.zeros((3, 4, 4))
    np.testing.assert_allclose(spearman(a, a), 1.0)
    np.testing.assert_array_equal(spearman(a, flat), 0.0)
    np.testing.assert_array_equal(spearman(flat, flat), 1.0)


# ---------------------------------------------------------------------------- ground truth: mask validity
from forensics.analysis.faithfulness.validity import mask_validity, random_region, verdict  # noqa: E402


def _region_model(region: np.ndarray):
    """A 'detector' whose fake logit is the mean of channel 0 inside ``region`` (minus 0.5): nothing else matters."""
    m = torch.as_tensor(region)

    def score(x: torch.Tensor) -> torch.Tensor:
        return x[:, 0][:, m].mean(1) - 0.5
    return score


def test_validity_arithmetic_on_a_model_that_reads_one_region():
    """Restoring the region the logit depends on removes the whole gap; equal-area random regions outside it,
    none; the verdict says yes. With the mask elsewhere, the verdict says no."""
    size, n = 32, 6
    region = np.zeros((size, size), bool)
    region[4:16, 8:20] = True
    rng = np.random.default_rng(0)
    bases = torch.as_tensor(rng.uniform(0, 0.4, (n, 3, size, size)), dtype=torch.float32)
    fakes = bases.clone()
    fakes[:, :, torch.as_tensor(region)] += torch.as_tensor(rng.uniform(0.5, 1.0, (n, 1, 1)), dtype=torch.float32)
    masks = np.repeat(region[None], n, 0)
    res = mask_validity(_region_model(region), fakes, bases, masks, draws=4, seed=1)
    assert np.all(res.fake > 0) and np.all(res.base < 0)
    np.testing.assert_allclose(res.removed_mask, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.removed_random, 0.0, atol=1e-6)
    np.testing.assert_allclose(res.area_ratio, 1.0)
    assert res.verdict() and res.to_dict()["masks_carry_evidence"] is True
    # a mask that is not where the evidence is: the fake differs in the region AND the mask marks elsewhere
    wrong = np.zeros_like(masks)
    wrong[:, 20:30, 20:30] = True
    res2 = mask_validity(_region_model(region), fakes, bases, wrong, draws=4, seed=1)
    np.testing.assert_allclose(res2.removed_mask, 0.0, atol=1e-6)
    assert not res2.verdict()


def test_random_region_equal_area_disjoint_and_seeded():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 10:30] = True
    a = random_region(mask, np.random.default_rng(3))
    b = random_region(mask, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.sum() == mask.sum() and not (a & mask).any()
    big = np.ones((16, 16), bool)
    big[:4] = False                                     # 64 free pixels for a 192-pixel mask: all of them
    r = random_region(big, np.random.default_rng(0))
    assert r.sum() == 64 and not (r & big).any()


def test_verdict_needs_the_mask_ci_above_the_random_ci():
    from forensics.analysis.faithfulness.stats import Estimate
    assert verdict({"mask": Estimate(0.9, 0.8, 1.0, 10), "random": Estimate(0.1, 0.0, 0.2, 10)})
    assert not verdict({"mask": Estimate(0.9, 0.15, 1.0, 10), "random": Estimate(0.1, 0.0, 0.2, 10)})
    assert not verdict({"mask": Estimate(0.4, 0.35, 0.45, 10), "random": Estimate(0.0, 0.0, 0.0, 10)})


def test_overlap_scores_and_their_chance_levels():
    """IoU/precision/recall/F1 at k = mask area equal rank accuracy's family; random maps score their chance."""
    from forensics.analysis.faithfulness.localisation import overlap
    m = np.zeros((1, 10, 10), bool)
    m[0, :2] = True                                     # 20 pixels
    perfect = overlap(m.astype(float), m)
    assert all(perfect[k][0] == 1.0 for k in ("iou", "precision", "recall", "f1"))
    half = np.zeros((1, 10, 10))
    half[0, 0], half[0, 5] = 1.0, 0.5                   # top-20 = row 0 (inside) + row 5 (outside)
    h = overlap(half, m)
    assert h["precision"][0] == h["recall"][0] == h["f1"][0] == 0.5 and h["iou"][0] == pytest.approx(1 / 3)
    assert localisation(half, m)["rank_accuracy"][0] == 0.5
    q = overlap(m.astype(float), m, quantile=0.9)       # top 10 pixels, all inside
    assert q["precision"][0] == 1.0 and q["recall"][0] == 0.5 and q["iou"][0] == 0.5
    rng = np.random.default_rng(0)
    masks = np.zeros((400, 16, 16), bool)
    masks[:, 2:9, 3:12] = True
    for quant in (None, 0.8):
        out = overlap(rng.random(masks.shape), masks, quantile=quant)
        chance = chance_levels(masks, quant)
        for k in ("iou", "precision", "recall", "f1"):
            assert np.nanmean(out[k]) == pytest.approx(chance[k].mean(), abs=0.02), (k, quant)
