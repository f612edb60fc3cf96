"""Shared training pieces: early stopping semantics, lr schedule, checkpoint round trip and RNG resume."""
import random

import numpy as np
import pytest
import torch

from forensics.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from forensics.train.earlystop import EarlyStopping, LrSchedule


def test_early_stopping_cnndet_semantics():
    es = EarlyStopping(patience=2, delta=-0.001)
    assert es.step(0.90)          # first call always best
    assert not es.step(0.9005)    # < best + 0.001: no improvement
    assert es.step(0.9011)        # >= best + 0.001
    assert not es.step(0.5) and not es.early_stop
    assert not es.step(0.5) and es.early_stop


def test_lr_schedule_three_phases():
    s = LrSchedule(lr=1e-4)
    assert s.drop() and s.drop()
    assert s.lr == pytest.approx(1e-6) and s.lr >= 1e-6
    assert not s.drop()
    assert s.new_stopper(5).delta == -0.002


def test_checkpoint_round_trip_and_rng(tmp_path):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1); np.random.seed(1); torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "model_epoch_latest.pth", model.state_dict(), opt, total_steps=5, epoch=2)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ck = load_checkpoint(path)
    assert ck["total_steps"] == 5 and ck["epoch"] == 2
    set_rng_state(ck["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["optimizer"])
    assert latest_checkpoint(tmp_path) == path and not list(tmp_path.glob(".*"))
