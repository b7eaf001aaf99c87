"""ImageProcessor: exact normalisation, deterministic geometry-preserving augmentation, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.errors import DataError
from polymodal.modalities.image.processor import ImageProcessor


def _scene(size: int = 64) -> Image.Image:
    """A light background with a red block on the left and a blue block on the right."""
    pixels = np.full((size, size, 3), 230, dtype=np.uint8)
    pixels[24:40, 8:24] = (220, 30, 30)
    pixels[24:40, 40:56] = (30, 70, 220)
    return Image.fromarray(pixels)


def test_shape_dtype_and_range(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    _scene(100).save(path)
    out = ImageProcessor(image_size=32)(path)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_normalisation_of_a_solid_colour_is_exact() -> None:
    image = Image.new("RGB", (50, 30), (255, 0, 51))  # resized to 16 x 16 on the way
    out = ImageProcessor(image_size=16, mean=(0.5, 0.25, 0.2), std=(0.5, 0.25, 0.1))(image)
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, (0.2 - 0.2) / 0.1])
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-6)


def test_greyscale_and_transparent_images_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 255).save(tmp_path / "grey.png")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # transparent -> white
    processor = ImageProcessor(image_size=8)
    for name in ("grey.png", "clear.png"):
        assert torch.allclose(processor(tmp_path / name), torch.ones(3, 8, 8))


def test_to_pil_inverts_the_normalisation() -> None:
    processor = ImageProcessor(image_size=64, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    image = _scene()
    assert np.array_equal(np.asarray(processor.to_pil(processor(image))), np.asarray(image))


def test_augmentation_is_deterministic_per_seed() -> None:
    processor = ImageProcessor(image_size=64, augment=True)
    image = _scene()
    first = processor(image, torch.Generator().manual_seed(0))
    again = processor(image, torch.Generator().manual_seed(0))
    other = processor(image, torch.Generator().manual_seed(1))
    plain = processor(image)  # no generator: no augmentation
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, plain)


def test_no_augmentation_when_disabled() -> None:
    image = _scene()
    plain = ImageProcessor(image_size=64)(image)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(ImageProcessor(image_size=64, augment=False)(image, generator), plain)
    assert torch.equal(ImageProcessor(image_size=64, augment=True)(image), plain)


def test_augmentation_keeps_left_and_right() -> None:
    # Over many draws the red block stays left of the blue one, shifts by at most 6%, and the
    # brightness changes by at most about 10%.
    processor = ImageProcessor(image_size=64, augment=True, mean=(0, 0, 0), std=(1, 1, 1))
    image = _scene()
    generator = torch.Generator().manual_seed(7)
    for _ in range(30):
        out = processor(image, generator)
        red = (out[0] > 0.6) & (out[2] < 0.3)  # (S, S)
        blue = (out[2] > 0.6) & (out[0] < 0.3)
        red_x = red.nonzero()[:, 1].float().mean()
        blue_x = blue.nonzero()[:, 1].float().mean()
        assert red_x < blue_x
        assert abs(red_x - 15.5) <= 0.06 * 64 and abs(blue_x - 47.5) <= 0.06 * 64
        assert abs(out[:, 0, 0].mean() - 230 / 255) < 0.25  # the corner is still (jittered) background


def test_unreadable_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    processor = ImageProcessor()
    with pytest.raises(DataError, match="cannot read image .*corrupt.png"):
        processor(corrupt)
    with pytest.raises(DataError, match="image file not found: .*absent.png"):
        processor.load(tmp_path / "absent.png")


def test_the_cache_returns_what_decoding_returns_without_reading_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    _scene(64).save(path)
    cached, plain = ImageProcessor(image_size=32, cache_mb=1), ImageProcessor(image_size=32)
    first = cached(path)
    torch.testing.assert_close(first, plain(path), rtol=0, atol=0)
    other = tmp_path / "other.png"
    Image.fromarray(np.asarray(_scene(64))[:, ::-1].copy()).save(other)  # mirrored: another image
    torch.testing.assert_close(cached(other), plain(other), rtol=0, atol=0)  # each file its own entry
    assert not torch.equal(cached(other), first)
    first += 1  # the caller's tensor is its own: changing it leaves the cache as it was
    path.unlink()
    torch.testing.assert_close(cached(path), plain(_scene(64)), rtol=0, atol=0)  # from memory
    augmented = [ImageProcessor(image_size=32, augment=True, cache_mb=1 if c else 0) for c in (True, False)]
    _scene(64).save(path)
    for processor in augmented:
        processor(path)  # the cached one now holds the decoded image
    draws = [p(path, torch.Generator().manual_seed(3)) for p in augmented]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)  # augmentation happens after the cache
    with pytest.raises(DataError, match="not found"):
        path.unlink()
        plain(path)
