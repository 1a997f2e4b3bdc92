"""Device and dtype choice: CUDA, then MPS, then CPU; a dtype each device runs well and safely."""

from __future__ import annotations

import torch

from ..errors import VaecliError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` (CUDA, then MPS, then CPU), or an explicit `cpu`, `cuda`, `cuda:N`, `mps`."""
    if isinstance(spec, torch.device):
        return spec
    if spec in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise VaecliError(f"--device {spec!r}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VaecliError(f"--device {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VaecliError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise VaecliError(f"--device {spec}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise VaecliError(f"--device {spec}: unsupported device type; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on CUDA where supported, else fp16 on a GPU, fp32 on CPU (exact and fast enough)."""
    if isinstance(spec, torch.dtype):
        return spec
    if spec in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    try:
        return DTYPES[spec]
    except KeyError:
        raise VaecliError(f"--dtype {spec!r}: use auto, fp32, fp16 or bf16") from None


def exact_float32(device: torch.device, dtype: torch.dtype) -> None:
    """fp32 on CUDA means fp32: turn off TF32, which torch enables for cuDNN convolutions by default.

    Measured on an H100 (scripts/gpu_check.sh): with TF32, fp32 latents of a real photograph were
    2.5e-4 (the default model) to 2.2e-3 (an SD-like model) relative from float64, and exact tiling
    1.4e-3 from untiled; the issue's bar is 1e-4. bf16/fp16 runs are left as they are.
    """
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
