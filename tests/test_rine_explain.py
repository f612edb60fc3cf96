"""RINE explainability: TIE importances, head LRP to the per-block CLS tokens, CP-LRP through the ViT
down to pixels, TIE vs LRP statistics and their CLIs (tiny open_clip config; the official 2-class
head is checked when /work/shared/reference-data is present)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import kendalltau, spearmanr

from forensics.analysis.tie import importance_matrix, mean_importance, summarize, summarize_heads, winner_fractions
from forensics.analysis.tie_vs_lrp import BlockRelevance, block_shares, compare
from forensics.detectors import create
from forensics.explain.lrp import explain_lrp
from forensics.explain.vit_lrp import ViTLRP, transformer_rules, unit_relevance
from test_clip_detectors import RINE_2CLASS, reference_file
from helpers import assert_same_snapshot, run_script, snapshot, tiny_rine

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKS, WIDTH, SIZE = 4, 64, 56


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- TIE
def test_tie_softmax_sums_to_one_over_blocks_and_summaries_by_hand():
    model = tiny_rine()
    a = importance_matrix(model)
    assert a.shape == (BLOCKS, 16)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(a, importance_matrix(model.rine_head.state_dict()), atol=1e-7)
    np.testing.assert_allclose(a, importance_matrix(model.state_dict()), atol=1e-7)
    np.testing.assert_allclose(mean_importance(a).sum(), 1.0)
    alpha = torch.tensor([[0.0, 5.0, 1.0, 1.0],
                          [2.0, 0.0, 1.0, 0.0],
                          [1.0, 0.0, 1.0, 3.0]]).log()  # softmax over blocks of log(x) = x / column sum
    m = importance_matrix(alpha)
    np.testing.assert_allclose(m[:, 0], [0, 2 / 3, 1 / 3], atol=1e-12)
    # winners per channel: block 1 (0-based), 0, tie -> first (0), 2 ; fractions over 4 channels
    np.testing.assert_allclose(winner_fractions(m), [2 / 4, 1 / 4, 1 / 4])
    np.testing.assert_allclose(mean_importance(m), m.mean(axis=1))


def test_official_2class_winner_histogram_matches_reference_figure():
    s = summarize(reference_file(RINE_2CLASS), "2-class")
    assert s.matrix.shape == (24, 128)
    w = s.winners
    # Koutlis & Papadopoulos (ECCV 2024), released 2class head: block 1 0.062, 4 0.078, 8 0.070, 10 0.086, 12 0.086 (largest), 22 0.008 (smallest)
    np.testing.assert_allclose(w[[0, 3, 7, 9, 11, 21]], np.array([8, 10, 9, 11, 11, 1]) / 128)
    assert w.min() == w[21] and w.max() == w[9] == w[11]
    assert 0.035 <= s.mean.min() and s.mean.max() <= 0.049
    assert abs(s.channel_max.mean() - 0.19) < 0.005 and 0.095 < s.channel_max.min() < 0.1
    assert abs(s.channel_max.max() - 0.44) < 0.005


# ---------------------------------------------------------------------------- head LRP per block
def test_head_lrp_block_relevance_conserves_the_logit_without_biases():
    model = tiny_rine()
    with torch.no_grad():
        for name, p in model.rine_head.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = images()
    start = torch.tensor([1.0, -1.0, 1.0])
    res = explain_lrp(model, x, start=start, layers=None)
    per_block = torch.stack([res.layer_relevance[f"blocks.{b}"].sum(1) for b in range(BLOCKS)], 1)
    # the relevance entering at the logit is the start signal itself (epsilon rule on the last Linear,
    # forensics.explain.lrp); with no bias only the stabilisers (1e-6 per Linear, against pre-activations
    # of ~1e-2 in this random head) absorb a little of it (3e-4 here)
    torch.testing.assert_close(per_block.sum(1), start, rtol=0, atol=2e-3)
    # LRP-0 (no stabiliser, the ViT explainer at the taps) conserves exactly
    vit = ViTLRP(model).explain(x, start=start)
    torch.testing.assert_close(vit.block_relevance.sum(1), start * vit.output, rtol=1e-5, atol=1e-6)


def test_head_lrp_equals_vit_lrp_block_relevance_with_biases():
    """The zennit head rules (epsilon 1e-6) and the ViT explainer's LRP-0 (input x gradient at the
    taps) are the same rule up to the stabiliser and the start: zennit hands ``start`` to the logit as
    its relevance, the ViT explainer ``start * logit``."""
    model = tiny_rine()
    x = images()
    start = torch.tensor([1.0, -1.0, 1.0])
    head = explain_lrp(model, x, start=start, layers=None)
    vit = ViTLRP(model).explain(x, start=start)
    per_block = torch.stack([head.layer_relevance[f"blocks.{b}"].sum(1) for b in range(BLOCKS)], 1)
    torch.testing.assert_close(vit.block_relevance, per_block * head.logits[:, None], rtol=1e-3, atol=1e-5)


def test_masking_one_block_changes_only_that_block_and_the_logit():
    model = tiny_rine()
    x = images()
    layers = [f"blocks.{b}" for b in range(BLOCKS)]
    with torch.no_grad(), model.record(layers) as base:
        logit = model(x)
    keys = [str(k) for k in model.feature_keys(["blocks.1"])]
    with torch.no_grad(), model.mask(keys), model.record(layers) as masked:
        masked_logit = model(x)
    assert torch.all(masked["blocks.1"] == 0)
    for b in (0, 2, 3):
        assert torch.equal(masked[f"blocks.{b}"], base[f"blocks.{b}"])
    g = torch.stack([base[n] for n in layers], 1)
    g[:, 1] = 0
    with torch.no_grad():
        torch.testing.assert_close(masked_logit, model.rine_head(g)[0])
    assert not torch.allclose(masked_logit, logit)


# ---------------------------------------------------------------------------- CP-LRP through the ViT
def test_transformer_rules_keep_forward_values_and_restore():
    model = tiny_rine()
    x = images()
    before = snapshot(model)
    with torch.no_grad():
        ref = model(x)
        with transformer_rules(model):
            ruled = model(x)
    torch.testing.assert_close(ruled, ref, rtol=1e-5, atol=1e-5)
    assert_same_snapshot(before, snapshot(model))
    assert not any("attention" in m.__dict__ for m in model.modules())


def test_vit_lrp_conserves_exactly_and_restores_the_model():
    model = tiny_rine()
    x = images()
    before = snapshot(model)
    with torch.no_grad():
        ref = model(x)
    start = torch.tensor([1.0, -1.0, 0.0])
    with ViTLRP(model) as lrp:
        res = lrp.explain(x, start=start, blocks=True, check_absorption=True)
        unit = lrp.explain_unit(x, "blocks.2.#5(T=64)", check_absorption=True)
        layer = lrp.explain_unit(x, "blocks.0")
    assert_same_snapshot(before, snapshot(model))
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    torch.testing.assert_close(res.output, ref, rtol=1e-5, atol=1e-5)
    # pixels + additive terms (biases, LN betas, class/positional embeddings) = start * logit, exactly
    total_in = float((start * res.output).sum())
    assert abs(float(res.pixel.sum()) + res.absorbed_direct - total_in) < 1e-4 * max(1.0, abs(total_in))
    assert torch.all(res.pixel[2] == 0)  # start 0: nothing explained
    # the per-block pixel maps add up to the logit's map; each block's relevance is its tap's share
    torch.testing.assert_close(res.block_pixel.sum(1), res.pixel, rtol=1e-4, atol=1e-6)
    assert res.block_pixel.shape == (3, BLOCKS, 3, SIZE, SIZE)
    # a unit: its activation is the start relevance; conservation with the absorbed terms
    assert abs(float(unit.pixel.sum()) + unit.absorbed_direct - float(unit.output.sum())) < 1e-4
    with torch.no_grad(), model.record(["blocks.2.#5(T=64)", "blocks.0"]) as rec:
        model(x)
    torch.testing.assert_close(unit.output, rec["blocks.2"][:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.output, rec["blocks.0"].sum(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unit_relevance(model, x, "blocks.2.#5(T=64)"), unit.pixel)


def test_vit_lrp_is_input_times_gradient_of_the_ruled_model():
    """LRP-0 through the detached-gate model: a hand check on one pixel by finite differences of the
    (linear) ruled function along that pixel."""
    model = tiny_rine()
    x = images(1)
    res = ViTLRP(model).explain(x, start=torch.ones(1))
    with model.explain_mode(), transformer_rules(model):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xx).sum(), xx)
    torch.testing.assert_close(res.pixel, g * x)


# ---------------------------------------------------------------------------- TIE vs LRP statistics
def test_block_shares_by_hand():
    rel = np.array([[1.0, -3.0], [0.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(block_shares(rel, "abs")[[0, 2]], [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(block_shares(rel, "signed")[0], [-0.5, 1.5])
    assert np.isnan(block_shares(rel)[1]).all()


def test_compare_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(0)
    n, blocks = 40, 5
    tie = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    rel = rng.random((n, blocks)) * tie * 4
    labels = np.repeat([0, 1], n // 2)
    data = BlockRelevance(rel, np.where(labels == 1, 2.0, -2.0), labels, np.ones(n, bool), [None] * n)
    comp = compare(data, tie, n_boot=50, seed=3)
    shares = rel / rel.sum(1, keepdims=True)
    for g, rows in (("real", labels == 0), ("fake", labels == 1), ("all", np.ones(n, bool))):
        mean = shares[rows].mean(0)
        np.testing.assert_allclose(comp.mean_share[g], mean)
        got = {r["statistic"]: r for r in comp.correlations if r["group"] == g}
        assert got["spearman"]["value"] == pytest.approx(spearmanr(tie, mean).statistic)
        assert got["kendall"]["value"] == pytest.approx(kendalltau(tie, mean).statistic)
        assert got["spearman"]["ci_low"] <= got["spearman"]["ci_high"]
    again = compare(data, tie, n_boot=50, seed=3)
    assert again.correlations == comp.correlations


# ---------------------------------------------------------------------------- CLIs and the default recipe
def write_head_and_set(tmp_path):
    model = tiny_rine()
    head = tmp_path / "head.pth"
    torch.save(model.rine_head.state_dict(), head)
    rng = np.random.default_rng(0)
    for label in ("0_real", "1_fake"):
        folder = tmp_path / "data" / "set" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return model, head


def test_tie_importance_cli_writes_tables_and_figures(tmp_path, capsys):
    model, head = write_head_and_set(tmp_path)
    assert run_script("analyses/tie_importance.py", ["--weights", str(head), "--label", "tiny",
                                                     "--out", str(tmp_path / "out")]) == 0
    import pandas as pd
    table = pd.read_csv(tmp_path / "out" / "tie-tiny.csv")
    np.testing.assert_allclose(table["mean_importance"], mean_importance(importance_matrix(model)), atol=1e-6)
    for name in ("importance", "tie-tiny-heatmap", "tie-tiny-mean"):
        assert (tmp_path / "out" / f"{name}.png").is_file() and (tmp_path / "out" / f"{name}.pdf").is_file()
    import json
    from forensics.io import sha256_file
    from forensics.report import discover
    summary = json.loads((tmp_path / "out" / "tie.json").read_text())
    assert [h["label"] for h in summary["heads"]] == ["tiny"]
    assert summary["provenance"]["command"][0] == "tie_importance.py"
    assert [c["sha256"] for c in summary["provenance"]["checkpoints"]] == [sha256_file(head)]
    found = discover(tmp_path / "out")  # the report lists the run, not a folder without a summary
    assert [r.summary_path.name for r in found.runs] == ["tie.json"] and not found.skipped


def test_tie_report_of_two_heads_writes_both_and_records_last(tmp_path):
    model, head = write_head_and_set(tmp_path)
    report = summarize_heads([head, model], ["file", "module"])
    np.testing.assert_allclose(report.heads[0].matrix, report.heads[1].matrix, atol=1e-6)  # one head, two ways
    paths = report.annotate(note="test").write(tmp_path / "out")
    import json
    summary = json.loads(paths["json"].read_text())
    assert list(summary) == ["heads", "note"] and [h["label"] for h in summary["heads"]] == ["file", "module"]
    assert {"table_file", "table_module", "importance"} <= set(paths) and paths["importance"].suffix == ".png"
    with pytest.raises(ValueError, match="labels"):
        summarize_heads([head], ["a", "b"])


def test_tie_vs_lrp_cli_on_a_tiny_set(tmp_path):
    model, head = write_head_and_set(tmp_path)
    out = tmp_path / "out"
    argv = ["--arch", "rine", "--weights", str(head), "-o", "backbone=forensics-tiny-vit", "-o",
            "backbone_weights=None", "--dataset_dir", str(tmp_path / "data"), "--gan_name", "set",
            "--include_wrong", "--n_boot", "20", "--max_images", "2", "--block_maps", "1", "--device", "cpu", "--out", str(out)]
    assert run_script("analyses/tie_vs_lrp.py", argv) == 0
    import json
    result = json.loads((out / "rine" / "set" / "tie_vs_lrp.json").read_text())
    assert result["counts"] == {"real": 3, "fake": 3, "all": 6}
    np.testing.assert_allclose(result["tie"], mean_importance(importance_matrix(model)), atol=1e-6)
    assert {r["group"] for r in result["correlations"]} == {"real", "fake", "all"}
    for name in ("tie_vs_lrp", "per_image", "per_block"):
        assert (out / "rine" / "set" / f"{name}.png").is_file()


def test_default_rine_recipe_gives_the_trainer_its_settings(tmp_path, monkeypatch):
    from forensics import defaults
    from forensics.defaults import DEFAULT_RECIPES, RineRecipe
    from forensics.train import get_trainer
    recipe = DEFAULT_RECIPES["rine"]
    assert isinstance(recipe, RineRecipe)
    monkeypatch.setattr(RineRecipe, "backbone_file", lambda self: tmp_path / "backbone.pth")  # written on first use
    options = recipe.options(tmp_path / "bench", tmp_path / "runs" / "rine-x")
    assert isinstance(options, get_trainer("rine").options)
    assert (options.backbone, options.nproj, options.proj_dim, options.dropout, options.epochs) == (
        recipe.backbone, recipe.nproj, recipe.proj_dim, recipe.dropout, recipe.epochs)
    assert options.epochs_reduce_lr == recipe.epochs_reduce_lr
    assert options.feature_cache == defaults.cache_dir() / "features" and options.name == "rine-x"


def test_default_clip_backbone_is_seeded_and_its_file_loads_the_same_weights(tmp_path, monkeypatch):
    from forensics import defaults
    from forensics.detectors.clip_backbone import ClipVisionBackbone
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    a, b = defaults.default_clip_backbone(), defaults.default_clip_backbone()
    assert (a.image_size, a.blocks, a.width, a.grid) == (64, 6, 64, 8)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    state = torch.get_rng_state()
    path = defaults.default_clip_backbone_file()
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    loaded = ClipVisionBackbone(defaults.DEFAULT_CLIP_BACKBONE, weights=path)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_block_gradcam_per_block_and_restores_cam_block():
    from forensics.explain.cam import block_gradcam
    model = tiny_rine()
    x = images(2)
    cams = block_gradcam(model, x, [0, 3])
    assert set(cams) == {0, 3} and model.cam_block == -1
    for cam in cams.values():
        assert cam.shape == (2, SIZE, SIZE) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert not torch.allclose(cams[0], cams[3])


def test_vit_lrp_on_ufd_conserves():
    torch.manual_seed(0)
    model = create("ufd", backbone="forensics-tiny-vit", backbone_weights=None).eval()
    res = ViTLRP(model).explain(images(2), start=torch.ones(2), check_absorption=True)
    assert abs(float(res.pixel.sum()) + res.absorbed_direct - float(res.output.sum())) < 1e-4


def test_channel_clis_run_on_the_default_rine(tmp_path, monkeypatch):
    """FF-RS and feature-map dropout through the same CLIs with ``--detector rine`` on the embedded
    default, made hermetic and small: a tiny benchmark (64 px, as the default backbone) and a
    3-epoch default RINE, both built into a temporary cache."""
    import dataclasses
    import json
    from forensics import defaults
    from forensics.data.synthetic import BenchmarkConfig
    tiny = BenchmarkConfig(train_per_class=6, val_per_class=6, test_per_family=6, gen_steps=2, gen_pool=8,
                           gen_batch=4, dead_leaves=0, photo_sources=("astronaut", "coffee"),
                           families=("tconv", "nearest"))
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(defaults, "BenchmarkConfig", lambda: tiny)
    monkeypatch.setitem(defaults.DEFAULT_RECIPES, "rine", dataclasses.replace(
        defaults.DEFAULT_RECIPES["rine"], epochs=3, epochs_reduce_lr=(2,), batch_size=8))
    assert run_script("analyses/rank_fmaps.py", ["--detector", "rine", "--conf_fake", "0.5", "--conf_real", "0.5",
                                                 "--device", "cpu", "--out", str(tmp_path / "rank")]) == 0
    summary = json.loads((tmp_path / "rank" / "rine" / "val_default" / "summary.json").read_text())
    assert summary["num_feature_maps"] == 6 * 64 and set(summary["topk_layer_share"]) <= {f"blocks.{b}" for b in range(6)}
    csv = tmp_path / "rank" / "rine" / "val_default" / "val-fake.csv"
    assert run_script("analyses/sensitivity.py", ["--detector", "rine", "--gan_name", "tconv",
                                                  "--fmap_csv", str(csv), "--replicas", "2", "--device", "cpu",
                                                  "--out", str(tmp_path / "sens")]) == 0
    assert (tmp_path / "sens" / "rine" / "default" / "dropout-table.csv").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vit_lrp_cuda_matches_cpu():
    model = tiny_rine()
    x = images(2)
    start = torch.tensor([1.0, -1.0])
    cpu = ViTLRP(model).explain(x, start=start)
    gpu = ViTLRP(model.cuda()).explain(x, start=start)
    assert gpu.pixel.is_cuda
    torch.testing.assert_close(gpu.pixel.cpu(), cpu.pixel, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gpu.block_relevance.cpu(), cpu.block_relevance, rtol=1e-3, atol=1e-5)
