"""The images the embedded default model is trained on and the held-out photographs it is judged on.

Every image comes from a package installable from PyPI (scikit-image's and scikit-learn's sample
data), with the licence its package states. The held-out photographs are never sampled for training;
`TRAIN` and `HELD_OUT` are checked to be disjoint on import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Image:
    name: str  # "skimage:<function>" or "sklearn:<file>"
    licence: str
    source: str


TRAIN = (
    Image("skimage:chelsea", "CC0 (photographer Stefan van der Walt)", "scikit-image data"),
    Image("skimage:coffee", "CC0 (photographer Rachel Michetti)", "scikit-image data, courtesy of Pikolo Espresso Bar"),
    Image("skimage:rocket", "public domain (SpaceX)", "https://www.flickr.com/photos/spacexphotos/16511594820"),
    Image("skimage:hubble_deep_field", "public domain (NASA)", "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    Image("sklearn:china.jpg", "CC BY 2.0 (danielbuechele)", "https://www.flickr.com/photos/danielbuechele/6061409035"),
    Image("sklearn:flower.jpg", "CC BY 2.0 (vultilion)", "https://www.flickr.com/photos/vultilion/6056698931"),
    # greyscale photographs and textures, replicated to RGB: structure without colour
    Image("skimage:camera", "CC0 (photographer Lav Varshney)", "scikit-image data"),
    Image("skimage:brick", "CC0", "https://cc0textures.com/view.php?tex=Bricks25"),
    Image("skimage:grass", "CC0", "https://www.deviantart.com/linolafett/art/Grass-01-434853879"),
    Image("skimage:gravel", "CC0", "https://cc0textures.com/view.php?tex=Gravel04"),
    Image("skimage:coins", "no known copyright restrictions (Brooklyn Museum)", "https://www.brooklynmuseum.org/opencollection/archives/image/51611"),
    Image("skimage:cell", "CC0", "scikit-image data"),
    Image("skimage:text", "public domain", "https://en.wikipedia.org/wiki/File:Corner.png"),
)

HELD_OUT = (
    Image("skimage:astronaut", "public domain (NASA)", "https://flic.kr/p/r9qvLn"),
    Image("skimage:immunohistochemistry", "no known copyright restrictions (CMMI)", "scikit-image data"),
    Image("skimage:retina", "CC0 (Mikael Häggström)", "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
)

assert not {i.name for i in TRAIN} & {i.name for i in HELD_OUT}, "a held-out image is in the training set"


def load_rgb(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB for an image name; greyscale is replicated, alpha dropped."""
    package, _, item = name.partition(":")
    if package == "skimage":
        import skimage.data

        arr = getattr(skimage.data, item)()
    elif package == "sklearn":
        import sklearn.datasets
        from PIL import Image as PILImage

        folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
        arr = np.asarray(PILImage.open(os.path.join(folder, item)).convert("RGB"))
    else:
        raise ValueError(f"unknown image source {name!r}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(arr[:, :, :3])


def centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


def held_out_crops(size: int = 512) -> list[tuple[str, np.ndarray]]:
    """The held-out photographs as centre (size, size, 3) uint8 crops."""
    return [(img.name.partition(":")[2], centre_crop(load_rgb(img.name), size)) for img in HELD_OUT]


def sources_metadata(images=TRAIN) -> list[dict[str, str]]:
    return [{"name": i.name, "licence": i.licence, "source": i.source} for i in images]
