"""Where an encoder runs and in which dtype: ``--device`` and ``--dtype`` resolved for this machine.

``auto`` picks CUDA when there is one, and bf16 on a GPU or on a CPU where bf16 matmuls measure
faster than fp32 (measured once per machine, kept in ``$L2V_SEARCH_HOME/cpu.json``); else fp32.
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING

from .errors import UsageError
from .manifest import fingerprint, read_json, write_json_atomic
from .models import home

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("fp32", "bf16", "fp16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of one of :data:`DTYPE_NAMES`."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "").split()[2:]
    except OSError:
        return []


def _matmul_rate(dtype: torch.dtype, reps: int = 6) -> float:
    """Multiply-adds per second of a matmul shaped like one of SmolLM2's MLP projections."""
    import torch

    a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    a @ b  # warm-up: oneDNN picks and caches its kernel
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 512 * 576 * 1536 / best


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matmuls beat fp32 on this CPU, measured once per machine and cached.

    The flags alone mislead: with AMX bf16 runs ~4x faster than fp32, but a CPU with AVX-512
    bf16 and no AMX (or AMX hidden by a hypervisor) was measured here running bf16 matmuls at
    0.55x of fp32. So a CPU without bf16 instructions gets fp32, and one with them is measured
    (~50 ms) and the answer kept in ``$L2V_SEARCH_HOME/cpu.json`` keyed by its model and flags.
    """
    flags = _cpu_flags()
    if "amx_bf16" not in flags and "avx512_bf16" not in flags:
        return False
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    key = fingerprint([model, sorted(flags), torch.__version__, torch.get_num_threads()])
    cache = home() / "cpu.json"
    try:
        known = read_json(cache)
    except (OSError, ValueError):
        known = {}
    if key in known:
        return bool(known[key]["bf16_fast"])
    ratio = _matmul_rate(torch.bfloat16) / _matmul_rate(torch.float32)
    with contextlib.suppress(OSError):
        write_json_atomic(cache, {**known, key: {"cpu": model, "bf16_over_fp32": round(ratio, 2),
                                                 "bf16_fast": ratio > 1.15}})
    return ratio > 1.15


def select_device(device: str = "auto") -> torch.device:
    """``auto``: the first CUDA device if there is one, else the CPU; a named device must exist here."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"device {device!r} does not exist here ({torch.cuda.device_count()} CUDA devices)")
    return dev


def select_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it (else fp16), bf16 on a CPU where it measures faster, else fp32."""
    import torch

    if dtype != "auto":
        return torch_dtype(dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else torch.float32
