"""Core Detector interface on the CNN detectors: registry, config, keys, probes, masks, explain mode,
checkpoint loading and its errors. Tiny inputs; random weights (BN statistics calibrated so that
activations carry signal)."""
from __future__ import annotations

import json

import pytest
import torch

from forensics.detectors import (FeatureMapKey, create, get_config, group_by_layer, list_detectors)
from forensics.detectors.config import DetectorConfig
from forensics.errors import CheckpointError
from forensics.io import atomic_torch_save
from helpers import assert_restored, calibrated as make_calibrated, input_side, no_hooks, snapshot, tiny, tiny_options

CNNS = [name for name in list_detectors() if not tiny_options(name)]  # the CNNs (no CLIP backbone)


def calibrated(name: str, seed: int = 0):
    return make_calibrated(name, seed, size=64)


@pytest.fixture(scope="module", params=CNNS)
def cnn(request):
    return calibrated(request.param)


def test_registry_lists_cnns():
    assert {"resnet50", "efb0"} <= set(list_detectors())
    with pytest.raises(KeyError, match="unknown detector"):
        create("no-such-detector")


@pytest.mark.parametrize("name", list_detectors())
def test_config_round_trip(name):
    cfg = get_config(name)
    again = DetectorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_unknown_option_rejected():
    with pytest.raises(TypeError, match="unknown option"):
        create("resnet50", nproj=3)


def test_key_format_round_trip():
    k = FeatureMapKey.parse("layer1.0.conv1.#63(T=64)")
    assert (k.layer, k.channel, k.total) == ("layer1.0.conv1", 63, 64)
    assert str(k) == "layer1.0.conv1.#63(T=64)"
    assert FeatureMapKey.parse("_blocks.0._project_conv.#2(T=16)").layer == "_blocks.0._project_conv"
    assert FeatureMapKey.parse("blocks.23.#1023(T=1024)") == FeatureMapKey("blocks.23", 1023, 1024)
    with pytest.raises(ValueError):
        FeatureMapKey.parse("layer1.0.conv1#x")
    with pytest.raises(ValueError):
        FeatureMapKey("conv1", 64, 64)
    assert group_by_layer(["a.#1(T=4)", "b.#0(T=2)", "a.#3(T=4)", "a.#1(T=4)"]) == {"a": [1, 3], "b": [0]}


@pytest.mark.parametrize("name,layers,maps", [("resnet50", 53, 26560), ("efb0", 49, 21008)])
def test_feature_maps_match_tff(name, layers, maps):
    """T-FF's feature maps (docs/ffrs.md, "Feature maps"): every conv output (R50: 53 layers, 26,560 maps; EfB0: 49 layers, 21,008 maps,
    SE convs excluded), each paired with the BatchNorm that follows it."""
    model = create(name)
    fls = model.feature_layers()
    assert len(fls) == layers and model.num_feature_maps() == maps
    assert all(set(fl.modules) == {"pre_bn", "post_bn"} for fl in fls)
    names = [fl.name for fl in fls]
    assert not any("_se_" in n for n in names)
    if name == "resnet50":
        assert names[0] == "conv1" and "layer1.0.downsample.0" in names
        assert model.feature_layer("layer1.0.downsample.0").modules["post_bn"] == "net.layer1.0.downsample.1"
    else:
        assert names[0] == "_conv_stem" and names[-1] == "_conv_head"
        assert model.feature_layer("_blocks.0._depthwise_conv").modules["post_bn"] == "net._blocks.0._bn1"
    keys = model.feature_keys()
    assert len(keys) == maps and str(keys[0]).endswith("#0(T=%d)" % fls[0].channels)


def test_forward_shape_and_transform(cnn):
    x = torch.randn(3, 3, 64, 64)
    assert cnn(x).shape == (3,)
    from PIL import Image
    img = Image.new("RGB", (256, 300), (255, 0, 0))
    t = cnn.transform()(img)
    assert t.shape == (3, 224, 224)
    assert torch.allclose(t[:, 0, 0], (torch.tensor([1.0, 0, 0]) - torch.tensor(cnn.config.preprocessing.mean))
                          / torch.tensor(cnn.config.preprocessing.std))
    assert cnn.transform(crop="none")(img).shape == (3, 300, 256)
    gray = cnn.transform(grayscale=True)(img)
    luma = round(255 * 299 / 1000) / 255.0  # PIL ITU-R 601-2 of pure red
    mean, std = torch.tensor(cnn.config.preprocessing.mean), torch.tensor(cnn.config.preprocessing.std)
    assert torch.allclose(gray[:, 5, 5], (luma - mean) / std, atol=1e-6)


@pytest.mark.parametrize("point", ["pre_bn", "post_bn"])
def test_record_matches_module_output_and_restores(cnn, point):
    x = torch.randn(2, 3, 64, 64)
    before = snapshot(cnn)
    y0 = cnn(x)
    layer = cnn.feature_layers()[1]
    module = cnn.get_submodule(layer.modules[point])
    seen = {}

    def keep(_m, _i, o):  # returns None: must not replace the module's output
        seen["out"] = o.detach().clone()
    h = module.register_forward_hook(keep)
    keys = [FeatureMapKey(layer.name, c, layer.channels) for c in (3, 0)]
    with cnn.record(keys, point=point) as rec, cnn.record([layer.name], point=point, reduce="spatial_max") as rmax:
        y1 = cnn(x)
    h.remove()
    assert torch.equal(rec[layer.name], seen["out"][:, [3, 0]])
    assert torch.equal(rec.key(keys[1]), seen["out"][:, 0])
    assert torch.equal(rmax[layer.name], seen["out"].amax(dim=(2, 3)))
    assert torch.equal(y0, y1) and torch.equal(y0, cnn(x))
    assert_restored(before, cnn)


@pytest.mark.parametrize("point", ["pre_bn", "post_bn"])
def test_mask_zeroes_exactly_the_chosen_channels(cnn, point):
    x = torch.randn(2, 3, 64, 64)
    layer = cnn.feature_layers()[2]
    chosen = [1, 4]
    keys = [FeatureMapKey(layer.name, c, layer.channels) for c in chosen]
    y0 = cnn(x)
    with cnn.record([layer.name], point=point) as clean:
        cnn(x)
    with cnn.mask(keys, point=point), cnn.record([layer.name], point=point) as masked:
        y1 = cnn(x)
    # hooks run in registration order: the mask's output is what the recorder sees
    other = [c for c in range(layer.channels) if c not in chosen]
    assert torch.count_nonzero(masked[layer.name][:, chosen]) == 0
    assert torch.equal(masked[layer.name][:, other], clean[layer.name][:, other])
    assert not torch.equal(y0, y1), "masking channels of an early layer should change the logit"
    assert torch.equal(cnn(x), y0) and no_hooks(cnn)


def test_mask_pre_bn_leaves_bn_shift(cnn):
    """Reference semantics (docs/dropout.md): a channel masked before BN leaves BN as the constant
    beta - gamma*mu/sqrt(var+eps); masked after BN it is exactly 0."""
    layer = cnn.feature_layers()[0]
    bn = cnn.get_submodule(layer.modules["post_bn"])
    key = [FeatureMapKey(layer.name, 0, layer.channels)]
    x = torch.randn(1, 3, 64, 64)
    with cnn.mask(key, point="pre_bn"), cnn.record([layer.name], point="post_bn") as rec:
        cnn(x)
    const = bn.bias[0] - bn.weight[0] * bn.running_mean[0] / torch.sqrt(bn.running_var[0] + bn.eps)
    assert torch.allclose(rec[layer.name][:, 0], const.expand_as(rec[layer.name][:, 0]), atol=1e-6)


def test_check_keys_rejects_foreign_keys(cnn):
    with pytest.raises((KeyError, ValueError)):
        cnn.mask(["no_layer.#0(T=4)"])
    first = cnn.feature_layers()[0]
    with pytest.raises(ValueError, match="T="):
        cnn.check_keys([f"{first.name}.#0(T={first.channels + 1})"])


def test_explain_mode_freezes_and_restores(cnn):
    cnn.train()
    flags = [p.requires_grad for p in cnn.parameters()]
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    with cnn.explain_mode():
        assert not cnn.training and not any(p.requires_grad for p in cnn.parameters())
        if cnn.name == "efb0":
            assert all(type(m._swish).__name__ == "SiLU" for m in cnn.modules() if hasattr(m, "_swish"))
        cnn(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in cnn.parameters())
    assert cnn.training and [p.requires_grad for p in cnn.parameters()] == flags
    if cnn.name == "efb0":
        assert all(type(m._swish).__name__ == "MemoryEfficientSwish" for m in cnn.modules() if hasattr(m, "_swish"))
    cnn.eval()


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_explain_mode_reaches_the_input_and_restores(name):
    """Explain mode on every registered detector: eval, no parameter gradient, a gradient at the
    input; on exit the model is as it was (train mode, flags, tensors, no hooks)."""
    model = tiny(name).train()
    before = snapshot(model)
    side = input_side(model)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0), requires_grad=True)
    with model.explain_mode():
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert_restored(before, model)


def test_efb0_explain_mode_same_output():
    """Explain mode swaps MemoryEfficientSwish for nn.SiLU: the same function. In float64, as the
    random calibrated EfB0 has logits of ~1e3, where float32 kernel differences reach ~2e-4 relative."""
    model = calibrated("efb0").double()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y0 = model(x)
    with model.explain_mode():
        y1 = model(x)
    torch.testing.assert_close(y1, y0.detach(), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", CNNS)
def test_checkpoint_formats_load(tmp_path, name):
    src = calibrated(name, seed=1)
    x = torch.randn(2, 3, 64, 64)
    ref = src(x)
    # CNNDetection / T-FF training checkpoint: {'model', 'optimizer', 'total_steps'}
    path = tmp_path / "model_epoch_best.pth"
    atomic_torch_save({"model": src.net.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                       "total_steps": 7}, path)
    loaded = create(name, weights=path)
    assert torch.equal(loaded(x), ref)
    # bare state dict with DataParallel prefix
    path2 = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in src.net.state_dict().items()}, path2)
    assert torch.equal(create(name, weights=path2)(x), ref)


def test_wrong_architecture_gives_clear_error(tmp_path):
    path = tmp_path / "efb0.pth"
    torch.save({"model": create("efb0").net.state_dict()}, path)
    with pytest.raises(CheckpointError) as exc:
        create("resnet50", weights=path)
    msg = str(exc.value)
    assert str(path) in msg and "ResNet-50" in msg and "missing keys" in msg and "unexpected keys" in msg


def test_shape_mismatch_is_named(tmp_path):
    sd = create("resnet50").net.state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)
    sd["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "imagenet_head.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"fc.weight: file \(1000, 2048\) vs model \(1, 2048\)"):
        create("resnet50", weights=path)


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_or_empty_checkpoint(tmp_path, cut):
    good = tmp_path / "good.pth"
    torch.save({"model": create("resnet50").net.state_dict()}, good)
    data = good.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as exc:
        create("resnet50", weights=bad)
    assert str(bad) in str(exc.value)


class Evil:
    """Any non-tensor Python object: weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        create("resnet50", weights=path)


def test_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file
    src = calibrated("resnet50", seed=2)
    path = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in src.net.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(create("resnet50", weights=path)(x), src(x))


def test_pretrained_configs_tie_weights_to_preprocessing():
    from forensics.detectors import list_pretrained, pretrained_config
    tags = list_pretrained()
    assert {"resnet50.cnndet_blur_jpg_prob0.5", "efb0.tff_blur_jpg_prob0.5", "rine.2class", "ufd.fc"} <= set(tags)
    for tag in tags:
        pc = pretrained_config(tag)
        assert pc.weights.tag == tag and pc.detector.name == pc.weights.detector
        assert pc.weights.url and pc.detector.preprocessing.mean
        json.dumps(pc.to_dict())
    rine4 = pretrained_config("rine.4class")
    assert (rine4.detector.options["nproj"], rine4.detector.options["proj_dim"]) == (2, 1024)
    assert pretrained_config("rine.2class").weights.sha256.startswith("680d301b")
    with pytest.raises(ValueError):
        pretrained_config("clip.vit_l14_openai")


def test_create_preprocessing_override():
    det = create("resnet50", preprocessing={"crop": "none"})
    assert det.config.preprocessing.crop == "none" and get_config("resnet50").preprocessing.crop == "center"
    from PIL import Image
    assert det.transform()(Image.new("RGB", (64, 48))).shape == (3, 48, 64)
