"""Shared pieces of the training stages: LoRA set-up, checkpoints that resume exactly, the
encoder directory a stage writes, and reading text files."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..manifest import atomic, library_versions, read_json, sha256_file, write_json_atomic
from ..models import ENCODER_MANIFEST_KIND, quiet_peft

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS


def add_lora(base: torch.nn.Module, cfg: LoraConfig):
    """Wrap the base model (no LM head) in a fresh LoRA adapter; returns the peft model."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets), bias="none"
    )
    with quiet_peft():
        return get_peft_model(base, peft_cfg)


def load_adapter_weights(peft_model, adapter: str | os.PathLike, cfg: LoraConfig) -> dict[str, Any]:
    """Start ``peft_model``'s fresh LoRA from a saved adapter of the same shape (a warm start);
    returns its fingerprint for the recipe."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(adapter)
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise UsageError(f"--init-adapter {folder}: no adapter_model.safetensors there")
    saved = read_json(folder / "adapter_config.json") if (folder / "adapter_config.json").is_file() else {}
    if (saved.get("r"), saved.get("lora_alpha"), sorted(saved.get("target_modules") or [])) != (
        cfg.r, cfg.alpha, sorted(cfg.targets)
    ):
        raise UsageError(f"--init-adapter {folder}: its LoRA (r={saved.get('r')}, alpha={saved.get('lora_alpha')}, "
                         f"targets={saved.get('target_modules')}) differs from this run's "
                         f"(r={cfg.r}, alpha={cfg.alpha})")
    result = set_peft_model_state_dict(peft_model, load_file(str(weights)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise UsageError(f"--init-adapter {folder}: does not fit the model ({len(missing)} LoRA weights missing, "
                         f"{len(result.unexpected_keys)} unexpected)")
    return {"path": str(folder), "sha256": file_fingerprint(weights)["sha256"]}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where the hardware runs it fast (fp32 master weights stay in the optimizer)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"training file not found: {path}")
    return path


def read_lines(path: str | os.PathLike) -> Iterator[str]:
    """Non-empty lines of a text file (``.gz`` read transparently), with a clear error if unreadable."""
    path = check_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
            for line in f:
                if line := line.strip():
                    yield line
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)[:16]}


# -- checkpoints ---------------------------------------------------------------------------
# state.pt holds only tensors and plain containers (numbers, strings, lists, dicts), so it loads
# with torch.load(weights_only=True): a copied run folder cannot run code when resumed.
def save_checkpoint(run_dir: Path, step: int, peft_model, optimizer, scheduler, extra: dict[str, Any]) -> Path:
    """Write ``checkpoint-<step>`` atomically (a temporary folder, then rename)."""
    final = run_dir / f"checkpoint-{step:06d}"
    tmp = run_dir / f".checkpoint-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    peft_model.save_pretrained(tmp / "adapter", safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
               tmp / "state.pt")
    write_json_atomic(tmp / "trainer.json", {"step": step, **extra})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    state = rng["numpy"]
    if isinstance(state, dict):
        np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"],
                             state["has_gauss"], state["cached_gaussian"]))
    else:  # a checkpoint written before format 2: numpy's own tuple
        np.random.set_state(state)
    py = rng["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]) if isinstance(py, dict) else py)


def _load_state(path: Path) -> dict[str, Any]:
    """state.pt without unpickling arbitrary objects; checkpoints written before format 2 also hold
    numpy arrays (the RNG state), allowed by name and nothing else."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        allowed = [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.uint32))]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UsageError(f"{path}: not a training state this version reads ({str(e).splitlines()[0]})") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoint-*")) if run_dir.is_dir() else []
    return found[-1] if found else None


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's trainer.json (step, fingerprint, history, format)."""
    if not (ckpt / "trainer.json").is_file():
        raise UsageError(f"{ckpt} is not a training checkpoint (no trainer.json)")
    return read_json(ckpt / "trainer.json")


def load_checkpoint(ckpt: Path, peft_model, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and RNG state; returns trainer.json."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    trainer = read_trainer_state(ckpt)
    set_peft_model_state_dict(peft_model, load_file(ckpt / "adapter" / "adapter_model.safetensors"))
    state = _load_state(ckpt / "state.pt")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return trainer


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in sorted(run_dir.glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# -- encoder directories -------------------------------------------------------------------
def write_encoder_dir(
    out: Path,
    *,
    base_model: str,
    previous_adapters: list[Path],
    new_adapter: tuple[str, Any] | None,
    encoder: dict[str, Any],
    recipe: dict[str, Any],
) -> Path:
    """Write an encoder directory: ``manifest.json`` plus one folder per adapter, in merge order.

    Each adapter's ``adapter_config.json`` names the previous stage as its base (a relative
    path), so the official LLM2Vec layout loader reads every stage folder too.
    """
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for src in previous_adapters:
        name = src.name
        if src.resolve() != (out / name).resolve():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
        names.append(name)
    if new_adapter is not None:
        name, peft_model = new_adapter
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(tmp, out / name)
        names.append(name)
    for i, name in enumerate(names):
        cfg_path = out / name / "adapter_config.json"
        cfg = read_json(cfg_path)
        cfg["base_model_name_or_path"] = base_model if i == 0 else f"../{names[i - 1]}"
        write_json_atomic(cfg_path, cfg)
    old = read_json(out / "manifest.json") if (out / "manifest.json").is_file() else {}
    manifest = {
        "kind": ENCODER_MANIFEST_KIND,
        "base_model": base_model,
        "adapters": names,
        "encoder": encoder,
        "recipe": {**old.get("recipe", {}), **recipe},
        "library_versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(out / "manifest.json", manifest)
    return out


def export_encoder(src: Path, dst: Path, dtype: str = "fp16") -> Path:
    """Copy an encoder directory with its adapters stored in ``dtype`` (fp16 halves the size;
    the adapters are merged into fp32 weights at load time either way). Checkpoints stay behind."""
    from safetensors.torch import load_file, save_file

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise UsageError(f"unknown dtype {dtype!r}; valid: {', '.join(dtypes)}")
    try:
        manifest = read_json(src / "manifest.json")
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict) or manifest.get("kind") != ENCODER_MANIFEST_KIND:
        raise UsageError(f"{src} is not an encoder directory (no readable encoder manifest.json)")
    adapters = manifest.get("adapters", [])
    for name in adapters:
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            if not (src / name / file).is_file():
                raise UsageError(f"{src} lacks {name}/{file}: not a complete encoder directory; nothing exported")
    with atomic(dst) as tmp:  # a unique temporary folder, renamed onto dst when done, removed on failure
        for name in adapters:
            (tmp / name).mkdir(parents=True)
            shutil.copy2(src / name / "adapter_config.json", tmp / name / "adapter_config.json")
            tensors = load_file(src / name / "adapter_model.safetensors")
            save_file({k: v.to(dtypes[dtype]).contiguous() for k, v in tensors.items()},
                      tmp / name / "adapter_model.safetensors", metadata={"format": "pt"})
        manifest["adapter_dtype"] = dtype
        write_json_atomic(tmp / "manifest.json", manifest)
        if (src / "README.md").is_file():
            shutil.copy2(src / "README.md", tmp / "README.md")
    return dst
