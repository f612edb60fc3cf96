"""Image-level traces of the benchmark's generators: the colour fingerprint (a chroma-only change in ITU-R 601
YCbCr) and the measurements the build uses (chroma magnitude, the period-2 upsampling trace at the Nyquist
frequency), plus the conversions between uint8 images and the generators' [-1, 1] tensors."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, the weights of PIL ``convert('L')`` and torchvision ``Grayscale``.
_LUMA = (0.299, 0.587, 0.114)


def uint8_to_signed(imgs: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def signed_to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W float in [-1, 1] -> N x H x W x 3 uint8 (rounded, clipped)."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    return torch.stack([y, (b - y) / 1.772, (r - y) / 1.402], 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x[:, 0], x[:, 1], x[:, 2]
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
    return torch.stack([r, g, b], 1)


def apply_color_fingerprint(x: torch.Tensor, chroma_block: float = 0.0, gain: float = 1.0) -> torch.Tensor:
    """Chroma-only change of ``x`` (N x 3 x H x W, [-1, 1]): a share ``chroma_block`` of the chroma
    at half resolution (2x2 blocks) and a chroma ``gain``; luma is untouched."""
    if chroma_block == 0.0 and gain == 1.0:
        return x
    ycc = rgb_to_ycbcr(x)
    c = ycc[:, 1:]
    if chroma_block:
        blk = F.interpolate(F.avg_pool2d(c, 2), scale_factor=2, mode="nearest")
        c = (1 - chroma_block) * c + chroma_block * blk
    c = c * gain
    return ycbcr_to_rgb(torch.cat([ycc[:, :1], c], 1))


def chroma_magnitude(x: torch.Tensor) -> float:
    """Mean chroma magnitude sqrt(Cb^2 + Cr^2) of N x 3 x H x W images in [-1, 1]."""
    c = rgb_to_ycbcr(x)[:, 1:]
    return float(c.pow(2).sum(1).sqrt().mean())


def nyquist_share(x: torch.Tensor, border: int = 4) -> torch.Tensor:
    """Per image: share of the non-DC luma power on the Nyquist row and column of the spectrum,
    where the period-2 trace of 2x upsamplers lies (``border`` pixels dropped first)."""
    y = rgb_to_ycbcr(x)[:, 0]
    if border:
        y = y[:, border:-border, border:-border]
    p = torch.fft.fft2(y.double()).abs().pow(2)
    h = p.shape[-1] // 2
    nyq = p[:, h, :].sum(1) + p[:, :, h].sum(1) - p[:, h, h]
    return nyq / (p.sum((1, 2)) - p[:, 0, 0]).clamp_min(1e-12)


def nyquist_ratio(fakes: torch.Tensor, reals: torch.Tensor) -> float:
    """Median over pairs of ``nyquist_share(fake_i) / nyquist_share(real_i)`` (fakes made from the
    reals, both quantised to 8 bit): the strength of the period-2 upsampling trace."""
    q = lambda t: torch.round((t.clamp(-1, 1) + 1) * 127.5)  # noqa: E731
    return float(torch.median(nyquist_share(q(fakes)) / nyquist_share(q(reals)).clamp_min(1e-12)))

