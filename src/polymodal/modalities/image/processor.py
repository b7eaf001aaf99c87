"""Image preprocessing: load, resize, normalise and (for training) augment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from polymodal.data.media import MediaCache
from polymodal.errors import DataError

MAX_SHIFT = 0.06  # translation, as a fraction of the image size
JITTER = 0.10  # brightness and contrast factors are drawn from [1 - JITTER, 1 + JITTER]


class ImageProcessor:
    """Turns an image file or PIL image into a normalised (3, S, S) tensor.

    Augmentation is deliberately mild and geometry-preserving: a small translation (at most 6% of the
    size, the border filled by repeating the edge pixels, i.e. the background) and brightness / contrast
    jitter of up to ±10%. There are no horizontal flips or rotations: they would change the answer to
    "is the red circle to the left of the blue square?" and the order of objects in a caption.

    Args:
        image_size: S, the output width and height; images are resized to S x S (not cropped).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by after subtracting the mean.
        augment: augment when a generator is passed to `__call__` (training); evaluation passes none.
        cache_mb: keep this many MiB of decoded, resized images (read from paths) in memory, so every
            epoch after the first skips decoding; 0 decodes every time.
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        augment: bool = False,
        cache_mb: int = 0,
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {list(mean)} and {list(std)}")
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment
        self.cache = MediaCache(cache_mb * 2**20)

    def load(self, path: str | Path) -> Image.Image:
        """Read an image file as RGB (transparency composited onto white, EXIF rotation applied).

        Raises:
            DataError: the file is missing or is not a readable image.
        """
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
                return image.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"image file not found: {path}") from None
        except Exception as error:  # Pillow raises many types for bad files
            raise DataError(f"cannot read image {path}: {error}") from None

    def __call__(
        self, image: Image.Image | str | Path, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Preprocess one image.

        Args:
            image: a PIL image or the path of an image file.
            generator: draws the augmentation; without one (or with `augment=False`) the output is the
                plain resized, normalised image.

        Returns:
            (3, S, S) float32, normalised with `mean` and `std`.
        """
        if isinstance(image, Image.Image):
            array = self._pixels(image)
        else:
            (array,) = self.cache.get(str(image), lambda: (self._pixels(self.load(image)),))
        pixels = torch.from_numpy(array.copy())  # (S, S, 3) uint8
        x = pixels.permute(2, 0, 1).float() / 255.0  # (3, S, S) in [0, 1]
        if self.augment and generator is not None:
            x = self._augment(x, generator)
        return (x - self.mean) / self.std

    def _pixels(self, image: Image.Image) -> np.ndarray:
        """(S, S, 3) uint8: `image` as RGB at the output size."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)  # Pillow widens the filter when shrinking: antialiased
        return np.asarray(image, dtype=np.uint8)

    def to_pil(self, tensor: torch.Tensor) -> Image.Image:
        """Undo the normalisation of a (3, S, S) tensor and return it as an RGB image (for reports)."""
        x = tensor.detach().cpu().float() * self.std + self.mean  # (3, S, S) in [0, 1]
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)  # (S, S, 3)
        return Image.fromarray(pixels.numpy())

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = x.shape[-1]
        max_shift = int(MAX_SHIFT * size)
        dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
        brightness, contrast = (1 + JITTER * (2 * torch.rand(2, generator=generator) - 1)).tolist()
        if max_shift > 0:
            padded = F.pad(x.unsqueeze(0), (max_shift,) * 4, mode="replicate")[0]  # (3, S + 2m, S + 2m)
            top, left = max_shift - dy, max_shift - dx  # content moves right by dx and down by dy
            x = padded[:, top : top + size, left : left + size]  # (3, S, S)
        x = x * brightness
        gray_mean = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()
        x = gray_mean + (x - gray_mean) * contrast
        return x.clamp(0.0, 1.0)
