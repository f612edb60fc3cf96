"""Each detector's facts are declared once (its DetectorConfig, plus facts higher layers attach to its
registry entry) and every lookup reads them from there."""
from __future__ import annotations

import pytest
from torch import nn

from forensics import weights as weight_registry
from forensics.defaults import DEFAULT_RECIPES, default_recipe
from forensics.detectors import get_config, list_detectors
from forensics.detectors.registry import FactView, detector_entry, register_fact
from forensics.explain import LRP_CONFIGS, lrp_spec
from forensics.explain.unit import UNIT_RELEVANCE
from forensics.train import get_trainer, list_trainers
from forensics.train.init import TRAINABLE
from helpers import tiny


@pytest.mark.parametrize("name", list_detectors())
def test_declaration_is_complete_and_consistent(name):
    config = get_config(name)
    assert config.label and config.paper and config.arch
    # the head names a module of the built detector
    assert isinstance(tiny(name).get_submodule(config.head), nn.Module)
    # the releases it loads cite the detector's own paper for its default release (no drifted copy)
    default = weight_registry.get_spec(config.default_weights)
    assert default.detector == name and default.paper == config.paper
    if config.init_weights is not None:
        assert weight_registry.get_spec(config.init_weights).detector is None  # an initialisation, not a detector


def test_facts_live_on_the_registry_entry():
    for fact, view in (("lrp", LRP_CONFIGS), ("unit_relevance", UNIT_RELEVANCE), ("train_init", TRAINABLE)):
        assert dict(view) == {n: detector_entry(n).facts[fact] for n in list_detectors()
                              if fact in detector_entry(n).facts}
    assert set(LRP_CONFIGS) == {"resnet50", "efb0", "rine"} and set(UNIT_RELEVANCE) == {"rine"}
    assert set(TRAINABLE) == {"resnet50", "efb0"}
    assert list_trainers() == list_detectors()
    assert all(get_trainer(n) is detector_entry(n).facts["trainer"] for n in list_trainers())
    assert lrp_spec(tiny("efb0")) is LRP_CONFIGS["efb0"]


def test_default_recipes_come_from_the_detectors():
    for name in list_detectors():
        if "default_recipe" in detector_entry(name).facts:
            assert DEFAULT_RECIPES[name] is default_recipe(name) and default_recipe(name).detector == name
    assert all(recipe.detector in list_detectors() for recipe in DEFAULT_RECIPES.values())
    with pytest.raises(KeyError, match="no default recipe for detector 'ufd'"):
        default_recipe("ufd")


def test_register_fact_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="declared twice"):
        register_fact("lrp", "resnet50")(LRP_CONFIGS["resnet50"])
    with pytest.raises(KeyError, match="unknown detector 'resnet5O'"):
        register_fact("lrp", "resnet5O")(object())
    with pytest.raises(TypeError):
        register_fact("lrp")
    view = FactView("no-such-fact")
    assert len(view) == 0 and dict(view) == {} and "resnet50" not in view
    with pytest.raises(TypeError):
        view["resnet50"] = 1  # read-only
