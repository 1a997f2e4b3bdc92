"""Pack the default model's training and held-out images, downscaled, into one folder a GPU machine can take.

    python scripts/default_model_pack.py --out runs/pack --long-side 2048 --quality 93

The wallpapers come from Debian packages (scripts/default_model_data.py) that a rented GPU machine
does not have, and at full size (843 megapixels) they are too large to send there; downscaled so that
the long side is at most `--long-side` (Lanczos; smaller images are kept as they are) and saved as
JPEG they are about 40 MB. `index.json` records, per image name, its file, its original size and
its packed size, and the packing parameters; `load_rgb(name, pack=FOLDER)` and the training and
evaluation scripts' `--image-pack FOLDER` read it. Never commit a pack: it holds the wallpapers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model_data as data  # noqa: E402  (sibling module of this script)


def main(argv=None) -> int:
    from PIL import Image as PILImage

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the pack folder (created)")
    p.add_argument("--long-side", type=int, default=2048)
    p.add_argument("--quality", type=int, default=93, help="JPEG quality")
    p.add_argument("--names", nargs="+", default=None, help="only these images (default: every training and held-out image)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    index = {}
    for i, img in enumerate(data.TRAIN + data.HELD_OUT):
        if args.names is not None and img.name not in args.names:
            continue
        arr = data.load_rgb(img.name)
        im = PILImage.fromarray(data.resize_long_side(arr, args.long_side))
        file = f"{i:03d}_{img.short}.jpg"
        im.save(args.out / file, "JPEG", quality=args.quality)
        index[img.name] = {"file": file, "size": f"{arr.shape[1]}x{arr.shape[0]}", "packed": f"{im.width}x{im.height}"}
    meta = {"long_side": args.long_side, "quality": args.quality, "resample": "Lanczos", "images": index}
    (args.out / "index.json").write_text(json.dumps(meta, indent=1))
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"{len(index)} images, {total / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
