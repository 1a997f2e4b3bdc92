"""The images the embedded default model is trained on and the held-out photographs it is judged on.

Every image comes from an installable package, never from a hub: scikit-image's and scikit-learn's
sample data (PyPI) and Debian's wallpaper packages, installed with

    apt-get install gnome-backgrounds plasma-workspace-wallpapers ukui-wallpapers sway-backgrounds \
        lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04

with the licence each package's /usr/share/doc/PACKAGE/copyright (or, for Plasma, each wallpaper's
metadata.json) states. mate-backgrounds is deliberately absent: it is kept for an independent check.
`HELD_OUT` images are never sampled for training; `TRAIN` and `HELD_OUT` are checked to be disjoint
on import.

How the held-out set was chosen (before any model was run on it): one or more photographs per
subject the issue names (people, animals, landscape, indoor, fine texture, text) plus microscopy,
taken from every source so that each source still trains the model, preferring photographs of
3000 px or more so that the full-size evaluation has several; the three scikit-image photographs
held out before (the `samples/` files) stay held out; one painting (`SafeLanding`) is held out too,
because a painting is where the size-dependent colour cast was first seen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

WALLPAPER_PACKAGES = (
    "gnome-backgrounds",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "sway-backgrounds",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
)
EVAL_SIZE = 512


@dataclass(frozen=True)
class Image:
    name: str  # "skimage:<function>", "sklearn:<file>" or "debian:<package>:<absolute path>"
    licence: str
    source: str
    kind: str = "photo"  # "photo" or "art" (renders, paintings, logos): weighted apart in training

    @property
    def short(self) -> str:
        """The name results are reported under: the function, the file name without its folders."""
        item = self.name.rpartition(":")[2]
        if "/usr/share/wallpapers/" in item:  # Plasma: <Name>/contents/images[_dark]/<size>.<ext>
            parts = item.split("/")
            return parts[4] + ("-dark" if parts[6].endswith("_dark") else "")
        return os.path.splitext(os.path.basename(item))[0]


def _plasma(name: str, file: str, licence: str, author: str, kind: str = "photo", folder: str = "images") -> Image:
    path = f"/usr/share/wallpapers/{name}/contents/{folder}/{file}"
    return Image(f"debian:plasma-workspace-wallpapers:{path}", f"{licence} ({author})", "Debian plasma-workspace-wallpapers", kind)


def _lomiri(file: str, licence: str, author: str, kind: str = "photo", release: str = "16.04") -> Image:
    package = f"lomiri-wallpapers-{release}"
    return Image(f"debian:{package}:/usr/share/backgrounds/{file}", f"{licence} ({author})", f"Debian {package}", kind)


def _ukui(file: str) -> Image:
    return Image(f"debian:ukui-wallpapers:/usr/share/backgrounds/{file}", "CC-BY-SA-3.0 (Ubuntu Kylin community contributors)", "Debian ukui-wallpapers", "art")


def _gnome(file: str) -> Image:
    return Image(
        f"debian:gnome-backgrounds:/usr/share/backgrounds/gnome/{file}",
        "CC-BY-SA-3.0 / GPL-2+ (Jakub Steiner and GNOME contributors, as the package's copyright file states)",
        "Debian gnome-backgrounds",
        "art",
    )


_SKIMAGE_TRAIN = (
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
)

_WALLPAPER_TRAIN = (
    # photographs
    _plasma("BytheWater", "2560x1600.jpg", "LGPL-3.0", "Maciej Wiklo"),
    _plasma("ColdRipple", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),
    _plasma("DarkestHour", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),
    _plasma("FallenLeaf", "2560x1600.jpg", "LGPL-3.0", "Martin Klapetek"),
    _plasma("Grey", "2560x1600.jpg", "LGPL-3.0", "Sigi Sagi"),
    _plasma("Kite", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),
    _plasma("Path", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),
    _plasma("summer_1am", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),
    _lomiri("Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0", "Sander Klootwijk"),
    _lomiri("Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0", "Bolly"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("free_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("greentock_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("seeding_by_Clements_Engelhardt.jpg", "CC0-1.0", "Clemens Engelhardt"),
    _lomiri("sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("Picture_1A_by_freespace.jpg", "CC-BY-4.0", "Trevor Freespace"),
    # paintings, renders and abstract art: large flat and graded colour, where a cast shows most
    _plasma("Altai", "5120x2880.png", "CC-BY-SA-4.0", "Alesya Khoteeva", "art"),
    _plasma("Autumn", "2560x1600.jpg", "LGPL-3.0", "RJ Quiralta", "art"),
    _plasma("Canopee", "3840x2160.png", "LGPL-3.0", "Ken Vermette", "art"),
    _plasma("Cascade", "3840x2160.png", "LGPL-3.0", "Ken Vermette", "art"),
    _plasma("Cluster", "3840x2160.png", "LGPL-3.0", "Ken Vermette", "art"),
    _plasma("Elarun", "2560x1600.png", "LGPL-3.0", "Nuno Pinheiro", "art"),
    _plasma("Flow", "5120x2880.jpg", "CC-BY-SA-4.0", "Sandra Smukaste", "art"),
    _plasma("Flow", "5120x2880.jpg", "CC-BY-SA-4.0", "Sandra Smukaste", "art", folder="images_dark"),
    _plasma("FlyingKonqui", "2560x1600.png", "LGPL-3.0", "Timothée Giet", "art"),
    _plasma("Honeywave", "5120x2880.jpg", "CC-BY-SA-4.0", "Ken Vermette", "art"),
    _plasma("IceCold", "5120x2880.png", "CC-BY-SA-4.0", "Santiago Cézar", "art"),
    _plasma("Kay", "5120x2880.png", "CC-BY-SA-4.0", "ruvkr", "art"),
    _plasma("Kay", "5120x2880.png", "CC-BY-SA-4.0", "ruvkr", "art", folder="images_dark"),
    _plasma("Kokkini", "3840x2160.png", "LGPL-3.0", "Ken Vermette", "art"),
    _plasma("MilkyWay", "5120x2880.png", "CC-BY-SA-4.0", "ruvkr", "art"),
    _plasma("Opal", "3840x2160.png", "LGPL-3.0", "Ken Vermette", "art"),
    _plasma("PastelHills", "3200x2000.jpg", "LGPL-3.0", "Lionel", "art"),
    _plasma("Patak", "5120x2880.png", "CC-BY-SA-4.0", "Áron Kovács", "art"),
    _plasma("Patak", "3840x2160.png", "CC-BY-SA-4.0", "Áron Kovács", "art", folder="images_dark"),
    _plasma("Shell", "5120x2880.jpg", "CC-BY-SA-4.0", "Lucas Andrade", "art"),
    _plasma("Volna", "5120x2880.jpg", "CC-BY-SA-4.0", "Nikita Babin", "art"),
    *(_ukui(f) for f in ("2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg", "fluent-color.png")),
    *(_ukui(f) for f in ("focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png", "string.jpg", "the-mouse.jpg")),
    *(_gnome(f"{n}-{v}.webp") for n in ("adwaita", "grid", "licorice", "pixels", "symbolic", "truchet", "wood") for v in "dl"),
    Image("debian:sway-backgrounds:/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_2048x1536.png", "Expat (Drew DeVault)", "Debian sway-backgrounds", "art"),
    Image(
        "debian:lomiri-wallpapers:/usr/share/backgrounds/warty-final-ubuntu.png",
        "CC-BY-SA-3.0 (Nathaniel McCallum, Daniel Holbach, Ubuntu community contributors)",
        "Debian lomiri-wallpapers",
        "art",
    ),
    _lomiri("umang_by_Abhishek_Mudgal.jpg", "CC-BY-4.0", "Abhishek Mudgal", "art"),
    _lomiri("Fossa_by_Jasper_Roks.jpg", "CC-BY-SA-3.0", "Jasper Roks", "art", release="20.04"),
    _lomiri("Infinite-Sea_by_Aury88.jpg", "CC-BY-SA-3.0", "Aury88", "art", release="20.04"),
    _lomiri("Painting-Colors_by__herobrine7gamer.jpg", "CC-BY-SA-3.0", "herobrine7gamer", "art", release="20.04"),
)

TRAIN = _SKIMAGE_TRAIN + _WALLPAPER_TRAIN

HELD_OUT = (
    Image("skimage:astronaut", "public domain (NASA)", "https://flic.kr/p/r9qvLn"),  # people
    Image("skimage:immunohistochemistry", "no known copyright restrictions (CMMI)", "scikit-image data"),  # microscopy
    Image("skimage:retina", "CC0 (Mikael Häggström)", "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    _lomiri("friends_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),  # animals: two dogs at a door
    _lomiri("Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0", "Lukas Baubkus", release="20.04"),  # animal: a nuthatch, 6028x3391
    _lomiri("picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),  # landscape: mountains
    _plasma("EveningGlow", "2560x1600.jpg", "LGPL-3.0", "Ian Hex"),  # landscape: boats at sunset
    _lomiri("Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0", "Jakub Mede"),  # indoor: a room, 2560x3837
    _plasma("ColorfulCups", "2560x1600.jpg", "LGPL-3.0", "Dmitri Popov"),  # indoor: stacked cups
    _lomiri("Picture_0B_by_freespace.jpg", "CC-BY-4.0", "Trevor Freespace"),  # indoor: a fig in a red bowl
    _plasma("OneStandsOut", "2560x1600.jpg", "LGPL-3.0", "Risto Saukonpää"),  # fine texture: plants
    _lomiri("analogpattern_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich"),  # fine texture: film grain
    Image("skimage:text", "public domain", "https://en.wikipedia.org/wiki/File:Corner.png"),  # text (172x448: full size only)
    Image("skimage:page", "public domain (scikit-image)", "scikit-image data"),  # text: a scanned page (191x384: full size only)
    _plasma("SafeLanding", "5120x2880.jpg", "CC-BY-SA-4.0", "Louis Durrant", "art"),  # a painting, full size only
)

assert not {i.name for i in TRAIN} & {i.name for i in HELD_OUT}, "a held-out image is in the training set"
assert not any("mate-backgrounds" in i.name for i in TRAIN + HELD_OUT), "mate-backgrounds is kept for an independent check"


def load_rgb(name: str, pack: str | os.PathLike | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB for an image name; greyscale is replicated, alpha dropped.

    `pack`: a folder written by scripts/default_model_pack.py, which holds the images downscaled
    (for a machine without the apt packages, such as a rented GPU); its images replace the originals.
    """
    package, _, item = name.partition(":")
    if pack is not None:
        arr = _read(os.path.join(pack, pack_index(pack)[name]["file"]))
    elif package == "skimage":
        import skimage.data

        arr = getattr(skimage.data, item)()
    elif package == "sklearn":
        import sklearn.datasets

        arr = _read(os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", item))
    elif package == "debian":
        deb, _, path = item.partition(":")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; install it with `apt-get install {deb}`")
        arr = _read(path)
    else:
        raise ValueError(f"unknown image source {name!r}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(arr[:, :, :3])


def pack_index(pack: str | os.PathLike) -> dict:
    """A pack's index: image name -> {"file", "size" (the original's WxH), "packed" (WxH)}."""
    return _pack_json(pack)["images"]


def pack_parameters(pack: str | os.PathLike) -> dict:
    """How a pack was made (long side, JPEG quality, resampling): provenance for weights trained on it."""
    return {k: v for k, v in _pack_json(pack).items() if k != "images"}


def _pack_json(pack: str | os.PathLike) -> dict:
    with open(os.path.join(pack, "index.json")) as f:
        return json.load(f)


def _read(path: str) -> np.ndarray:
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = None  # 6000x4000 wallpapers are legitimate, not decompression bombs
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def resize_long_side(arr: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 resized (Lanczos) so that its long side is `side`; never enlarged: an image
    already that small is returned as it is."""
    from PIL import Image as PILImage

    h, w = arr.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return arr
    return np.asarray(PILImage.fromarray(arr).resize((round(w * scale), round(h * scale)), PILImage.Resampling.LANCZOS))


def centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


CAMERA_SHORT_SIDE = 1500  # a short side over this is a camera-sized photograph, resized before the 512 crop


def eval_crop(arr: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """The (size, size, 3) view of a photograph that the 512 evaluation uses.

    Camera-sized photographs (short side over CAMERA_SHORT_SIDE: the wallpapers) are first resized,
    as a user would before asking for 512x512, so that their short side is `size` (Lanczos); then
    the centre square. scikit-image's photographs (at most 1411 px) are centre-cropped, as `samples/` is.
    """
    h, w = arr.shape[:2]
    if min(h, w) > CAMERA_SHORT_SIDE:
        from PIL import Image as PILImage

        scale = size / min(h, w)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))  # PIL sizes are (W, H)
        arr = np.asarray(PILImage.fromarray(arr).resize(new, PILImage.Resampling.LANCZOS))
    return centre_crop(arr, size)


def held_out_crops(size: int = EVAL_SIZE, images=HELD_OUT, pack=None) -> list[tuple[str, np.ndarray]]:
    """The held-out photographs large enough for it, as (size, size, 3) uint8 views (`eval_crop`)."""
    out = []
    for img in images:
        if img.kind != "photo":
            continue
        arr = load_rgb(img.name, pack)
        if min(arr.shape[:2]) >= size:
            out.append((img.short, eval_crop(arr, size)))
    return out


def held_out_full(min_side: int = 0, images=HELD_OUT, pack=None) -> list[tuple[str, np.ndarray]]:
    """The held-out images at their full size, those whose long side is at least `min_side`."""
    out = []
    for img in images:
        arr = load_rgb(img.name, pack)
        if max(arr.shape[:2]) >= min_side:
            out.append((img.short, arr))
    return out


def sources_metadata(images=TRAIN) -> list[dict[str, str]]:
    return [{"name": i.name, "licence": i.licence, "source": i.source, "kind": i.kind} for i in images]
