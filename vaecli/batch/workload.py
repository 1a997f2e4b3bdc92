"""What a --resize asks of the model, said once before the run: how far it upscales, the pixels, the memory per image.

`--resize 9999x9999` over a folder of small photographs is legal (and sometimes meant), but it turns a
run of seconds into one of many minutes and gigabytes, with nothing on screen to say why. The sizes are
known from the images' headers before any is decoded, so the cost can be told up front.
"""

from __future__ import annotations

import warnings

from ..io.images import SizeSpec, image_size
from ..runtime.executor import Runner
from ..runtime.memory import estimate_memory
from .plan import Job

UPSCALE_WARN = 2.0  # a linear factor: beyond it the model sees 4x the pixels and more, with no detail gained


def _bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.3g} megapixels"


def resize_cost(runner: Runner, jobs: list[Job], size: SizeSpec, decode: bool) -> str | None:
    """One line on what `size` makes of these images' headers, or None when it upscales little and fits the budget.

    decode: the run also decodes (roundtrip, compare), whose full-resolution layers are the wider ones.
    """
    if size.width is None:
        return None
    vae, budget = runner.vae, runner.memory.budget(runner.device)
    f = vae.downsample_factor
    n = upscaled = 0
    pixels_in = pixels_out = 0
    worst = None  # (factor, (w, h) before, (w, h) after)
    largest = (0, 0)  # (h, w) the model sees, the most pixels
    for job in jobs:
        if (wh := image_size(job.input)) is None:
            continue  # unreadable ones fail on their own when read; videos Pillow cannot open are not counted
        w, h = wh
        try:
            (rh, rw), crop = size.resized(h, w, f)
        except ValueError:
            continue
        n += 1
        factor = max(rh / h, rw / w)
        upscaled += factor > UPSCALE_WARN
        if worst is None or factor > worst[0]:
            worst = (factor, (w, h), (rw, rh))
        mh, mw = crop or (rh, rw)
        pixels_in += w * h
        pixels_out += mh * mw
        if mh * mw > largest[0] * largest[1]:
            largest = (mh, mw)
    if worst is None:
        return None
    shape = (1, 3, -(-largest[0] // f) * f, -(-largest[1] // f) * f)  # padded to the factor, as encoded
    passes = [(shape, "encode")] + ([((1, 1, shape[2] // f, shape[3] // f), "decode")] if decode else [])
    need = max(estimate_memory(vae, s, runner.dtype, mode) for s, mode in passes)
    tiled = any(runner.memory.should_tile(vae, s, runner.dtype, mode) for s, mode in passes)  # the Runner's own decision
    if upscaled == 0 and not tiled:
        return None
    factor, (w, h), (rw, rh) = worst
    words = [f"--resize {size.width}{'' if size.height is None else f'x{size.height}'}"]
    if upscaled:
        words.append(f"upscales {upscaled} of {n} input(s) by more than {UPSCALE_WARN:g}x (up to {factor:.1f}x: {w}x{h} -> {rw}x{rh}),"
                     " which adds pixels but no detail;")
    words.append(f"the model sees {_megapixels(pixels_out)}, {pixels_out / pixels_in:.2g}x the inputs' {_megapixels(pixels_in)};")
    if tiled:
        words.append(f"the largest ({largest[1]}x{largest[0]}) needs about {_bytes(need)} untiled, more than the {_bytes(budget)} the model may use"
                     " (see --max-memory), so it runs tiled, far slower;")
    else:
        words.append(f"the largest ({largest[1]}x{largest[0]}) needs about {_bytes(need)};")
    words.append("Ctrl-C stops the run and keeps what is written")
    return " ".join(words)


def say_resize_cost(runner: Runner, jobs: list[Job], size: SizeSpec, decode: bool) -> None:
    """Warn (once, before the run) when a --resize upscales far or exceeds the memory budget: resize_cost's line."""
    line = resize_cost(runner, jobs, size, decode)
    if line is not None:
        warnings.warn(line, stacklevel=2)
