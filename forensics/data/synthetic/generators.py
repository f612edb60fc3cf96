"""The benchmark's fake-image generators: one small network per family (a shared half-resolution trunk and a
family-specific last stage), their brief training with snapshot selection, and generation."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import FAMILIES, BenchmarkConfig, ColorFingerprint
from .fingerprints import apply_color_fingerprint, chroma_magnitude, nyquist_ratio, signed_to_uint8, uint8_to_signed
from .seeding import _rng, _torch_seed
from .sources import Source, _split_count, sample_crops


class Generator(nn.Module):
    """Half-resolution trunk + a family-specific last stage producing the full-resolution RGB image.

    ``forward(x)`` takes the full-resolution real crop (N x 3 x H x W in [-1, 1]); the upsampling
    families see only its 2x2 average, the ``denoise`` family sees it plus Gaussian noise.
    """

    def __init__(self, kind: str, width: int = 32, denoise_sigma: float = 0.1,
                 color: ColorFingerprint = ColorFingerprint()):
        super().__init__()
        self.kind, self.color, self.denoise_sigma = kind, color, float(denoise_sigma)
        self.chroma_gain = float(color.saturation)   # replaced by the calibrated gain at build time
        w = width
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.trunk = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), act(), nn.Conv2d(w, w, 3, padding=1), act(),
                                   nn.Conv2d(w, w, 3, padding=1), act())
        if kind == "tconv4":
            self.last = nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1)
        elif kind == "tconv3":
            self.last = nn.ConvTranspose2d(w, 3, 3, stride=2, padding=1, output_padding=1)
        elif kind == "pshuffle":
            self.last = nn.Sequential(nn.Conv2d(w, 12, 3, padding=1), nn.PixelShuffle(2))
        elif kind == "nearest":
            self.last = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, 3, 3, padding=1))
        elif kind == "bilinear":
            self.last = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                      nn.Conv2d(w, 3, 3, padding=1))
        elif kind == "denoise":
            self.last = nn.Conv2d(w, 3, 3, padding=1)
        else:
            raise ValueError(f"unknown generator kind {kind!r}")

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "denoise":
            xn = x + (noise if noise is not None else torch.randn_like(x)) * self.denoise_sigma
            y = xn - self.last(self.trunk(xn))
        else:
            y = self.last(self.trunk(F.avg_pool2d(x, 2)))
        return apply_color_fingerprint(y, self.color.chroma_block, self.chroma_gain)


_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def _highpass(x: torch.Tensor) -> torch.Tensor:
    k = _LAPLACE.to(x).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=x.shape[1])


def train_generator(gen: Generator, pool: torch.Tensor, steps: int, batch: int, lr: float, hf_weight: float,
                    seed: int, select: Callable[[Generator], float] | None = None,
                    select_steps: Sequence[int] = (), select_min: float = 0.0,
                    prefer_step: int | None = None) -> tuple[list[float], dict]:
    """Adam on L1 + ``hf_weight`` * L1 of the Laplacian (sharper outputs), without the colour
    fingerprint (a post-process). Returns the loss curve (mean of every 50 steps) and the
    selection record. With ``select``, the snapshot after each step count in ``select_steps``
    (training then runs to the largest) is scored by ``select(gen)``; of the snapshots scoring
    ``>= select_min`` the one nearest to ``prefer_step`` (default: ``steps``) is kept, the earlier
    on a tie, or the highest-scoring snapshot if none qualifies."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.9, 0.99))
    color, gen.color = gen.color, ColorFingerprint()
    gain, gen.chroma_gain = gen.chroma_gain, 1.0
    curve, acc = [], []
    checkpoints = sorted(set(int(s) for s in select_steps)) if select else []
    prefer = steps if prefer_step is None else prefer_step
    if checkpoints:
        steps = checkpoints[-1]
    best: tuple[float, int, dict] | None = None        # highest score
    chosen: tuple[float, int, dict] | None = None      # qualifying snapshot nearest to ``prefer``
    scores: dict[int, float] = {}
    gen.train()
    try:
        for step in range(steps):
            idx = torch.randint(0, pool.shape[0], (batch,), generator=g)
            x = pool[idx]
            if gen.kind == "denoise" and x.shape[-1] >= 32:   # fully convolutional at full res: train on
                h = x.shape[-1] // 2                           # half-size patches (4x cheaper)
                oy, ox = (int(v) for v in torch.randint(0, x.shape[-1] - h + 1, (2,), generator=g))
                x = x[..., oy:oy + h, ox:ox + h]
            if torch.rand((), generator=g) < 0.5:
                x = x.flip(3)
            noise = torch.randn(x.shape, generator=g) if gen.kind == "denoise" else None
            y = gen(x, noise)
            loss = (y - x).abs().mean() + hf_weight * (_highpass(y) - _highpass(x)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc.append(loss.item())
            if len(acc) == 50 or step == steps - 1:
                curve.append(round(sum(acc) / len(acc), 5))
                acc = []
            if step + 1 in checkpoints:
                gen.eval()
                with torch.no_grad():
                    score = float(select(gen))
                gen.train()
                scores[step + 1] = round(score, 5)
                snap = (score, step + 1, {k: v.detach().clone() for k, v in gen.state_dict().items()})
                if score >= select_min and (chosen is None or abs(step + 1 - prefer) < abs(chosen[1] - prefer)):
                    chosen = snap
                if best is None or score > best[0]:
                    best = snap
        if chosen is not None:
            best = chosen
        if best is not None:
            gen.load_state_dict(best[2])
    finally:
        gen.color, gen.chroma_gain = color, gain
        gen.eval()
    record = {"selected_step": best[1], "scores": scores} if best is not None else {"selected_step": steps}
    return curve, record


@torch.no_grad()
def generate(gen: Generator, reals: np.ndarray, seed: int, batch: int = 256) -> np.ndarray:
    """Fakes (uint8 N x H x W x 3) for real crops ``reals``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(reals), batch):
        x = uint8_to_signed(reals[i:i + batch])
        noise = torch.randn(x.shape, generator=g) if gen.kind == "denoise" else None
        out.append(signed_to_uint8(gen(x, noise)))
    return np.concatenate(out) if out else reals[:0].copy()


def selection_steps(cfg: BenchmarkConfig) -> list[int]:
    """Step counts at which snapshots are scored (80, 90, ..., 140 for the default 100 steps)."""
    n = max(int(cfg.gen_steps), 1)
    every = max(1, int(round(n / cfg.gen_select_snapshots)))
    lo = max(1, int(round(cfg.gen_select_window[0] * n)))
    hi = max(lo, int(round(cfg.gen_select_window[1] * n)))
    return list(range(lo, hi + 1, every))


def build_generators(cfg: BenchmarkConfig, sources: Sequence[Source],
                     progress: Callable[[str], None] | None = None) -> tuple[dict[str, Generator], dict[str, dict]]:
    """Train one generator per family on real train-region crops; returns generators and their info."""
    rng = _rng(cfg.seed, "gen_pool")
    pool_np, _ = sample_crops(sources, "train", _split_count(cfg.gen_pool, len(sources)), rng, cfg)
    pool = uint8_to_signed(pool_np)
    probe_np, _ = sample_crops(sources, "train", _split_count(cfg.gen_probe, len(sources)), _rng(cfg.seed, "probe"), cfg)
    probe = uint8_to_signed(probe_np)
    probe_noise = torch.randn(probe.shape, generator=torch.Generator().manual_seed(_torch_seed(cfg.seed, "probe")))
    real_chroma = chroma_magnitude(probe)
    gens, info = {}, {}
    for name in cfg.families:
        spec = FAMILIES[name]
        t0 = time.perf_counter()
        torch.manual_seed(_torch_seed(cfg.seed, "init", name))
        gen = Generator(spec.kind, cfg.gen_width, cfg.denoise_sigma, cfg.family_color(name))
        selecting = cfg.gen_select_min is not None and spec.kind in cfg.gen_select_kinds
        curve, record = train_generator(gen, pool, cfg.gen_steps, cfg.gen_batch, cfg.gen_lr, cfg.gen_hf_weight,
                                        _torch_seed(cfg.seed, "train", name),
                                        select=(lambda gn: nyquist_ratio(gn(probe), probe)) if selecting else None,
                                        select_steps=selection_steps(cfg) if selecting else (),
                                        select_min=float(cfg.gen_select_min or 0.0))
        with torch.no_grad():
            if gen.color.active and gen.color.calibrate and gen.color.saturation != 1.0:
                gen.chroma_gain = 1.0
                own = chroma_magnitude(gen(probe, probe_noise)) / real_chroma
                gen.chroma_gain = float(gen.color.saturation) / own
            out = gen(probe, probe_noise)
            measured = {"nyquist_ratio": round(nyquist_ratio(out, probe), 4),
                        "chroma_ratio": round(chroma_magnitude(out) / real_chroma, 4),
                        "l1": round(float((out - probe).abs().mean()), 5)}
        gens[name] = gen
        info[name] = {"kind": spec.kind, "description": spec.description,
                      "parameters": sum(p.numel() for p in gen.parameters()),
                      "colour_fingerprint": {**dataclasses.asdict(gen.color), "chroma_gain_applied":
                                             round(gen.chroma_gain, 5)},
                      "train_steps": (selection_steps(cfg)[-1] if selecting else cfg.gen_steps),
                      "kept_step": record["selected_step"],
                      "selection": ({"rule": "snapshot nearest to gen_steps with probe nyquist_ratio >= min",
                                     "min": cfg.gen_select_min, **record} if selecting else None),
                      "batch": cfg.gen_batch, "lr": cfg.gen_lr,
                      "loss": "L1 + %g * L1(Laplacian)" % cfg.gen_hf_weight, "loss_curve_per_50_steps": curve,
                      "probe": measured, "seconds": round(time.perf_counter() - t0, 2)}
        if progress:
            progress(f"generator {name}: kept step {record['selected_step']}, probe {measured} "
                     f"({info[name]['seconds']} s)")
    return gens, info
