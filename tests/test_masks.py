"""Masks follow their image pixel for pixel: an EXIF-rotated image, cropped and resized by the
detector's transform at any input size (and ten-cropped), keeps its drawn shape on its mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from forensics.data import ImageDataset, ImageRecord
from forensics.data.color import ColorAblation
from forensics.data.masks import MaskTransform
from forensics.detectors.preprocess import PadToSize, StackCrops

W, H = 60, 40
BOX = (7, 5, 31, 22)  # x0, y0, x1, y1 of the bright shape on the upright image


def upright() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((H, W, 3), 20, dtype=np.uint8)
    m = np.zeros((H, W), dtype=np.uint8)
    x0, y0, x1, y1 = BOX
    image[y0:y1, x0:x1] = 235
    image[y0:y0 + 6, x0:x0 + 4] = 20  # a notch: the shape is not symmetric, so a flip or rotation shows
    m[image[..., 0] > 128] = 255
    return image, m


@pytest.fixture
def rotated_pair(tmp_path) -> ImageRecord:
    """The image stored rotated (pixels turned 90 degrees) with EXIF orientation 8, which turns it back
    upright when read; the mask drawn on the upright image."""
    image, m = upright()
    stored = Image.fromarray(image).transpose(Image.Transpose.ROTATE_270)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees clockwise... to display: undoes ROTATE_270
    stored.save(tmp_path / "img.png", exif=exif)
    Image.fromarray(m).save(tmp_path / "mask.png")
    return ImageRecord(tmp_path / "img.png", 1, "x", mask=tmp_path / "mask.png")


def bright(image: torch.Tensor) -> torch.Tensor:
    """Pixels of the drawn shape in a transform's output (Normalize with mean 0.5, std 0.5)."""
    return image.mean(dim=-3) > 0


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float((a & b).sum()) / max(1, float((a | b).sum()))


NORM = [T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]


@pytest.mark.parametrize("steps", [
    [],                                             # full resolution
    [T.CenterCrop(32)],                             # crop
    [T.Resize(97), T.CenterCrop(80)],               # enlarge, then crop
    [T.Resize(23)],                                 # shrink (bilinear image, nearest mask)
    [T.Resize((50, 90)), T.CenterCrop((40, 70))],   # aspect change
    [T.CenterCrop(72)],                             # crop larger than the image: zero padding on both
    [T.Pad(3), T.Grayscale(3), ColorAblation("grayscale")],
])
def test_mask_stays_aligned_through_rotation_crop_resize(rotated_pair, steps):
    dataset = ImageDataset([rotated_pair], T.Compose([*steps, *NORM]), masks=True)
    sample = dataset[0]
    assert sample["error"] is None
    image, m = sample["image"], sample["mask"]
    assert m.shape == image.shape[-2:] and set(m.unique().tolist()) <= {0, 1}
    assert m.sum() > 0 and iou(bright(image), m) > 0.85


def test_mask_without_transform_is_exact(rotated_pair):
    sample = ImageDataset([rotated_pair], T.Compose(NORM), masks=True)[0]
    assert torch.equal(bright(sample["image"]), sample["mask"].bool())  # pixel for pixel at the input size
    assert sample["mask"].shape == (H, W)  # the EXIF rotation was applied: upright


def test_ten_crop_masks_follow_each_crop(rotated_pair):
    transform = T.Compose([T.Resize(48), PadToSize(40), T.TenCrop(40), StackCrops(T.Compose(NORM))])
    sample = ImageDataset([rotated_pair], transform, masks=True)[0]
    assert sample["mask"].shape == (10, 40, 40)
    for crop, m in zip(sample["image"], sample["mask"]):
        assert torch.equal(bright(crop), m.bool()) or iou(bright(crop), m) > 0.85


def test_a_step_that_may_move_pixels_is_refused():
    with pytest.raises(ValueError, match="masks cannot follow"):
        MaskTransform(T.Compose([T.RandomRotation(10), T.ToTensor()]))


def test_reals_get_zero_masks_and_masks_need_no_mask_file(tmp_path):
    Image.new("RGB", (9, 7)).save(tmp_path / "r.png")
    sample = ImageDataset([ImageRecord(tmp_path / "r.png", 0, "r")], T.Compose(NORM), masks=True)[0]
    assert sample["mask"].shape == (7, 9) and sample["mask"].sum() == 0
