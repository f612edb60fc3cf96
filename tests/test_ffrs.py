"""FF-RS (forensics.analysis.ffrs, docs/ffrs.md): streaming omega against T-FF's keep-everything
computation, batch-size invariance, the confidence filter, the CSVs released with T-FF (Chandrasegaran
et al., ECCV 2022; checked when the released files are present), CSV round trip, key compatibility with
our detectors."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.analysis.ffrs import (FFRSAccumulator, channel_shares, compute_ffrs, confidence_mask, layer_share,
                                     lowk, omega_curve, plot_omega, sort_ranking, topk)
from forensics.analysis.fmap_ranking import read_ranking_csv, write_ranking_csv
from forensics.data import ImageRecord
from forensics.detectors import Detector, FeatureMapKey, create
from forensics.explain import LRPEngine, LRPResult, explain_lrp
from helpers import calibrated_cached

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference-data" / "tff" / "fmap_relevances"
SHIPPED = {arch: REF / arch / "progan_val_0.5" for arch in ("resnet50", "efb0")}
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="shared reference data (T-FF CSVs) not available")


pytestmark = pytest.mark.usefixtures("one_thread")


def calibrated(name: str, seed: int = 0) -> Detector:
    return calibrated_cached(name, seed, size=32)


def reference_omega(relevances: list[torch.Tensor]) -> torch.Tensor:
    """T-FF's strategy (docs/ffrs.md, "The statistic"): keep every sample's relevance, normalise each by
    its absolute sum, average over samples, sum over space."""
    r = torch.cat(relevances)
    r_hat = r.clamp_min(0) / r.abs().sum(dim=(1, 2, 3), keepdim=True)
    return r_hat.mean(dim=0).sum(dim=(1, 2))


# ---------------------------------------------------------------------------- (a) streaming = brute force
def test_streaming_equals_keep_everything():
    model = calibrated("resnet50")
    torch.manual_seed(5)
    x = torch.randn(5, 3, 32, 32)
    acc = FFRSAccumulator.for_detector(model)
    kept: dict[int, dict[str, list[torch.Tensor]]] = {0: {}, 1: {}}
    with LRPEngine(model) as lrp:
        for part in (slice(0, 3), slice(3, 5)):
            res = lrp.explain(x[part], None, layers=None)  # labels=None: explain the predicted class
            labels = (res.probs >= 0.5).long()
            keep = torch.ones(len(res), dtype=torch.bool)
            keep[0] = part.start != 0  # one filtered sample: it must not count anywhere
            acc.update(res, labels, keep)
            for i in keep.nonzero().flatten().tolist():
                for name, r in res.layer_relevance.items():
                    kept[int(labels[i])].setdefault(name, []).append(r[i:i + 1])
    assert acc.used[0] + acc.used[1] == 4 and acc.filtered[0] + acc.filtered[1] == 1
    sides = [label for label in (0, 1) if acc.used[label]]
    assert sides
    for label in sides:
        omega = acc.omega(label)
        assert list(omega) == [fl.name for fl in model.feature_layers()]
        for name, values in omega.items():
            torch.testing.assert_close(values, reference_omega(kept[label][name]).double(), rtol=0, atol=1e-6)
            assert values.sum() <= 1 + 1e-9  # a layer's omega is its positive-mass fraction


def test_channel_shares_zero_relevance_contributes_zero():
    r = torch.zeros(2, 3, 2, 2)
    r[1, 0, 0, 0], r[1, 2, 1, 1] = 3.0, -1.0
    shares = channel_shares(r)
    assert shares.dtype == torch.float64
    assert shares[0].tolist() == [0, 0, 0]  # sum |R| == 0: contributes 0 (the reference: NaN)
    assert shares[1].tolist() == [0.75, 0, 0]


def test_accumulates_rine_token_features():
    """RINE's feature layers are per-block CLS tokens ([B, C], no space): omega per block and channel
    from the head-only LRP."""
    torch.manual_seed(0)
    model = create("rine", backbone="forensics-tiny-vit", backbone_weights=None, nproj=1, proj_dim=16).eval()
    res = explain_lrp(model, torch.randn(3, 3, 56, 56), None, layers=None)
    labels = (res.probs >= 0.5).long()
    acc = FFRSAccumulator.for_detector(model)
    acc.update(res, labels, torch.ones(3, dtype=torch.bool))
    side = int(labels[0])
    omega = acc.omega(side)
    assert list(omega) == [f"blocks.{b}" for b in range(4)] and all(v.shape == (64,) for v in omega.values())
    ranking = acc.ranking(side)
    assert len(ranking) == 4 * 64 and str(ranking[0][0]).startswith("blocks.")
    mine = torch.stack([res.layer_relevance[n][labels == side] for n in omega])  # [layers, n, C]
    expected = (mine.clamp_min(0) / mine.abs().sum(dim=2, keepdim=True)).mean(dim=1)
    torch.testing.assert_close(torch.stack(list(omega.values())), expected.double(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- images on disk
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ffrs_images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def predicted_labels(model: Detector, paths: list[Path], transform) -> torch.Tensor:
    """The class the canonised model predicts for each image (so every record is correct)."""
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    return (explain_lrp(model, x).probs >= 0.5).long()


# ---------------------------------------------------------------------------- (b) batch-size invariance
@pytest.mark.parametrize("arch,dtype", [("resnet50", torch.float64), ("efb0", torch.float32)],
                         ids=["resnet50-float64", "efb0-float32"])
def test_batch_size_does_not_change_omega(arch, dtype, images, tmp_path):
    """Same images one by one and in one batch of 16. R50 runs in float64: in float32 the epsilon rule
    at residual sums that nearly cancel amplifies the ~1e-5 relative differences of oneDNN's
    batch-size-dependent conv kernels, moving single omegas of this random tiny R50 by ~2e-5; the
    streaming/batching logic itself is exact (float64 shows it); EfB0 passes in float32."""
    model = calibrated(arch) if dtype == torch.float32 else copy.deepcopy(calibrated(arch)).to(dtype)
    transform = model.transform(crop="none")  # deterministic: no random crop
    labels = predicted_labels(model, images, transform)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    records = [ImageRecord(p, int(label), "test") for p, label in zip(images, labels)]
    records.insert(5, ImageRecord(bad, 1, "test"))
    runs = {bs: compute_ffrs(model, records, batch_size=bs, transform=transform, conf_real=0.5, conf_fake=0.5,
                             progress=False) for bs in (1, 16)}
    one, many = runs[1], runs[16]
    assert one.counts == many.counts
    assert sum(c["used"] for c in one.counts.values()) == 16
    assert [p for p, _ in one.summary.skipped] == [str(bad)] and one.summary.used == 16
    assert one.omega.keys() == many.omega.keys() and one.omega
    for side in one.omega:
        for name in one.omega[side]:
            torch.testing.assert_close(one.omega[side][name], many.omega[side][name], rtol=0, atol=1e-5)
        assert len(one.rankings[side]) == model.num_feature_maps() == {"resnet50": 26560, "efb0": 21008}[arch]


# ---------------------------------------------------------------------------- (c) confidence filter
def test_confidence_filter_counts_and_excludes(images):
    model = copy.deepcopy(calibrated("efb0"))
    transform = model.transform(crop="none")
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    # Centre the logits on their median, typical size 3 (p ~ 0.05 / 0.95): some confident, some not.
    fc = model.net._fc
    f = explain_lrp(model, x).logits
    scale = 3.0 / (f - f.median()).abs().median()
    with torch.no_grad():
        fc.weight.mul_(scale)
        fc.bias.copy_(fc.bias * scale - f.median() * scale)
    probs = explain_lrp(model, x).probs
    labels = (probs >= 0.5).long()
    order = probs.argsort()  # most real first; the extremes stay correct and confident (kept)
    labels[order[1:3]], labels[order[-3:-1]] = 1, 0  # two confident reals and two fakes mislabelled: never kept
    keep = confidence_mask(probs, labels, 0.1, 0.9)
    for side in (0, 1):
        on_side = labels == side
        assert (on_side & keep).any() and (on_side & ~keep).any(), "test data must exercise both outcomes"

    records = [ImageRecord(p, int(label), "test") for p, label in zip(images, labels)]
    result = compute_ffrs(model, records, batch_size=8, transform=transform, progress=False)
    for side, name in ((0, "real"), (1, "fake")):
        on_side = labels == side
        assert result.counts[name] == {"used": int((on_side & keep).sum()), "filtered": int((on_side & ~keep).sum())}
    # omega over the kept images alone equals the filtered run's
    only = FFRSAccumulator.for_detector(model)
    res = explain_lrp(model, x[keep], layers=None)
    only.update(res, labels[keep], torch.ones(int(keep.sum()), dtype=torch.bool))
    for side, name in ((0, "real"), (1, "fake")):
        for layer, values in only.omega(side).items():
            torch.testing.assert_close(result.omega[name][layer], values, rtol=0, atol=1e-6)


def test_filter_thresholds_and_mask():
    probs = torch.tensor([0.95, 0.9, 0.6, 0.05, 0.1, 0.3, 0.99])
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0])
    assert confidence_mask(probs, labels).tolist() == [True, True, False, True, True, False, False]
    with pytest.raises(ValueError, match="conf_real"):
        confidence_mask(probs, labels, conf_real=0.6)


def test_accumulator_rejects_incomplete_results():
    acc = FFRSAccumulator({"a": 2, "b": 3})
    res = LRPResult(logits=torch.zeros(1), start=torch.ones(1), pixel=torch.zeros(1, 3, 2, 2),
                    layer_relevance={"a": torch.ones(1, 2, 2, 2)})
    with pytest.raises(ValueError, match="lacks 1 layer"):
        acc.update(res, [1], [True])
    with pytest.raises(ValueError, match="no fake image"):
        acc.omega(1)


# ---------------------------------------------------------------------------- (d) the CSVs released with T-FF
TOP10 = {
    "resnet50": [("layer1.0.conv1", 63, 64, 0.129363), ("layer1.0.conv1", 47, 64, 0.111426),
                 ("layer1.0.conv1", 0, 64, 0.111144), ("layer1.1.conv1", 57, 64, 0.098399),
                 ("conv1", 40, 64, 0.096715), ("layer4.2.conv1", 487, 512, 0.093005),
                 ("layer2.1.conv1", 92, 128, 0.091357), ("layer1.2.conv2", 38, 64, 0.090561),
                 ("layer1.0.conv2", 33, 64, 0.083010), ("conv1", 32, 64, 0.082478)],
    "efb0": [("_blocks.0._depthwise_conv", 2, 32, 0.147048), ("_conv_stem", 2, 32, 0.146997),
             ("_blocks.0._project_conv", 2, 16, 0.097855), ("_conv_stem", 9, 32, 0.097147),
             ("_blocks.0._depthwise_conv", 9, 32, 0.097143), ("_conv_stem", 11, 32, 0.094859),
             ("_blocks.0._depthwise_conv", 11, 32, 0.094849), ("_blocks.0._project_conv", 14, 16, 0.084995),
             ("_blocks.1._project_conv", 18, 24, 0.077720), ("_blocks.0._project_conv", 10, 16, 0.077154)],
}
TOPK = {  # layer: channels in rank order; layers ordered by their best rank (released CSVs)
    "resnet50": (114, {
        "layer1.0.conv1": [63, 47, 0, 59, 11, 4, 30, 36, 17],
        "layer1.1.conv1": [57, 54, 36, 44, 27, 61, 21, 52],
        "conv1": [40, 32, 62, 43, 25, 23, 1, 16, 35],
        "layer4.2.conv1": [487, 495, 63, 74, 108, 223],
        "layer2.1.conv1": [92, 104, 11, 35, 9, 126, 76, 68, 125, 51],
        "layer1.2.conv2": [38, 37],
        "layer1.0.conv2": [33, 2, 5, 18, 11, 23, 48, 36, 50, 40, 31],
        "layer1.1.conv2": [26, 28, 54, 8, 36, 5, 29, 9, 14, 59, 61],
        "layer1.2.conv1": [17, 51, 9, 32, 34, 36, 15, 55, 21, 12, 41, 18, 7, 25, 58],
        "layer4.0.conv2": [507, 364, 70, 125, 123, 493],
        "layer4.1.conv2": [64, 436, 398, 510],
        "layer4.2.conv2": [167, 408, 291, 322, 264],
        "layer2.2.conv1": [15, 72, 39],
        "layer2.1.conv2": [116, 103, 43, 21, 110],
        "layer3.1.conv2": [180, 29],
        "layer3.5.conv3": [437],
        "layer2.3.conv2": [103, 86],
        "layer3.3.conv2": [105],
        "layer1.1.conv3": [170],
        "layer2.0.conv2": [52],
        "layer2.0.conv1": [107],
        "layer3.3.conv3": [516],
    }),
    "efb0": (27, {
        "_blocks.0._depthwise_conv": [2, 9, 11, 12, 25],
        "_conv_stem": [2, 9, 11, 12, 25],
        "_blocks.0._project_conv": [2, 14, 10, 7, 13, 9, 11, 15, 1, 6, 12],
        "_blocks.1._project_conv": [18, 17],
        "_blocks.2._expand_conv": [113],
        "_blocks.2._project_conv": [22, 20],
        "_blocks.2._depthwise_conv": [113],
    }),
}
KTH = {"resnet50": (("layer2.1.conv2", 110, 128, 0.025329), 0.025239),
       "efb0": (("_blocks.0._project_conv", 12, 16, 0.056394), 0.054657)}
TOTALS = {"resnet50": (26560, 705, 36.69), "efb0": (21008, 11, 45.10)}
REAL_TOP1 = {"resnet50": ("layer2.3.conv2", 92, 0.0789), "efb0": ("_blocks.10._project_conv", 100, 0.0184)}


@functools.cache
def shipped(arch: str, side: str = "fake"):
    return read_ranking_csv(SHIPPED[arch] / f"progan_val-{side}.csv")


def as_row(key: FeatureMapKey, value: float) -> tuple:
    return key.layer, key.channel, key.total, round(value, 6)


@needs_ref
@pytest.mark.parametrize("arch", ["resnet50", "efb0"])
def test_shipped_csv_reproduces_reference_values(arch):
    ranking = shipped(arch)
    rows, zeros, total = TOTALS[arch]
    assert len(ranking) == rows
    assert sort_ranking(ranking) == ranking  # already sorted descending
    assert [as_row(k, v) for k, v in ranking[:10]] == TOP10[arch]
    k, layers = TOPK[arch]
    top = topk(ranking, k)
    assert layer_share(top) == {layer: len(chans) for layer, chans in layers.items()}
    assert {layer: [key.channel for key in top if key.layer == layer] for layer in layers} == layers
    kth, next_value = KTH[arch]
    assert as_row(*ranking[k - 1]) == kth and round(ranking[k][1], 6) == next_value
    assert sum(v == 0 for _, v in ranking) == zeros and all(v >= 0 for _, v in ranking)
    assert round(sum(v for _, v in ranking), 2) == total
    layer, channel, value = REAL_TOP1[arch]
    key, omega = shipped(arch, "real")[0]
    assert (key.layer, key.channel, round(omega, 4)) == (layer, channel, value)


@needs_ref
def test_shipped_low_k_and_zero_groups():
    r50 = shipped("resnet50")
    assert all(v == 0 for _, v in sort_ranking(r50)[-114:]) and len(lowk(r50, 114)) == 114
    zero_layers = layer_share(k for k, v in r50 if v == 0)
    assert {n: zero_layers[n] for n in ("layer4.1.conv1", "layer4.2.conv1", "layer2.0.conv3", "layer2.0.downsample.0",
                                        "layer4.1.conv2", "layer3.0.conv3", "layer3.0.downsample.0")} == {
        "layer4.1.conv1": 156, "layer4.2.conv1": 82, "layer2.0.conv3": 67, "layer2.0.downsample.0": 67,
        "layer4.1.conv2": 60, "layer3.0.conv3": 50, "layer3.0.downsample.0": 50}
    efb0 = shipped("efb0")
    assert layer_share(k for k, v in efb0 if v == 0)["_blocks.15._expand_conv"] == 7
    low = sort_ranking(efb0)[-27:]
    assert sum(v == 0 for _, v in low) == 11 and round(max(v for _, v in low), 7) == 4.5e-6  # "<= 4.5e-6"
    assert topk(r50, 0) == [] and lowk(r50, 0) == []


@needs_ref
@pytest.mark.parametrize("arch", ["resnet50", "efb0"])
def test_shipped_keys_match_our_feature_maps(arch):
    """(f) Same layer names, channel counts and key format as the reference."""
    ours = {str(k) for k in create(arch).feature_keys()}
    for side in ("fake", "real"):
        keys = [str(k) for k, _ in shipped(arch, side)]
        assert len(set(keys)) == len(keys) and set(keys) == ours


# ---------------------------------------------------------------------------- (e) CSV round trip
def small_ranking() -> list:
    values = np.float32([0.5, 0.125, 1 / 3, 0.0, 9.904933540383354e-05, 1 / 3]).tolist()
    keys = [FeatureMapKey("layer1.0.conv1", c, 6) for c in range(6)]
    return list(zip(keys, values))


def test_csv_round_trip_exact(tmp_path):
    ranking = small_ranking()
    path = write_ranking_csv(tmp_path / "sub" / "fake.csv", ranking)
    back = read_ranking_csv(path)
    assert back == sort_ranking(ranking)
    assert [str(k) for k, _ in back][:3] == ["layer1.0.conv1.#0(T=6)", "layer1.0.conv1.#2(T=6)",
                                             "layer1.0.conv1.#5(T=6)"]  # stable: tie keeps network order
    text = path.read_text()
    assert text.startswith("key,mean_relevance\nlayer1.0.conv1.#0(T=6),0.5\n") and text.endswith(",0.0\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.csv"]  # no temporary files left


def test_csv_write_is_atomic(tmp_path):
    path = write_ranking_csv(tmp_path / "fake.csv", small_ranking())
    before = path.read_bytes()
    broken = small_ranking() + [(FeatureMapKey("x", 0, 1), "not a number")]
    with pytest.raises((TypeError, ValueError)):
        write_ranking_csv(path, broken)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["fake.csv"]
    (tmp_path / "bad.csv").write_text("name,value\na,1\n")
    with pytest.raises(ValueError, match="header"):
        read_ranking_csv(tmp_path / "bad.csv")


@needs_ref
def test_csv_writer_reproduces_shipped_file_bytes(tmp_path):
    src = SHIPPED["resnet50"] / "progan_val-fake.csv"
    out = write_ranking_csv(tmp_path / "again.csv", shipped("resnet50"))
    assert out.read_bytes() == src.read_bytes()


def test_omega_curve_and_plot(tmp_path):
    x, y = omega_curve(small_ranking())
    assert x.tolist() == list(range(6)) and (np.diff(y) <= 0).all()
    out = plot_omega(small_ranking(), tmp_path / "omega.png", title="FF-RS (ω)")
    assert out.stat().st_size > 0
