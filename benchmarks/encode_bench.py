"""Encoding throughput: this encoder vs a plain transformers loop, sentence-transformers and llm2vec.

All variants embed the same passages (SciFact abstracts, BEIR's title + " " + text) with the same
bidirectional SmolLM2-135M and mean pooling, truncated to ``--max-length`` tokens, one after the
other in one process (never concurrently: two torch jobs on a small CPU slow each other ~10x):

* ``ours``   - ``load_encoder`` defaults: bf16 where the CPU is fast at it, length-sorted batches
               under a padded-token budget, ``torch.inference_mode``.
* ``plain``  - (a) a plain transformers loop: fp32, fixed batches in input order, padded to the
               longest, ``torch.no_grad``.
* ``st``     - (b) sentence-transformers 6 wrapping the same model (plain-text input, not the chat
               template; ``is_causal = False``; mean pooling) in the same dtype as ``ours``.
* ``llm2vec``- (c) the official ``llm2vec`` package, run in its own virtual environment (it pins
               transformers 4.44), on a copy of the model patched for transformers 4.
* ``int8``   - ours with ``--dtype int8``: the same tokenization and batches, the model exported to
               ONNX and quantized (SmoothQuant + dynamic int8), run by ONNX Runtime (the ``int8``
               extra); built and cached before the timing. Target: >= 1.5x ours.

Throughput is real (non-padding) tokens per second, tokenization included, model load and one
warm-up batch excluded. Model FLOP utilisation (MFU) counts the forward FLOPs of the real tokens
(2 x non-embedding parameters per token + 4 x layers x hidden x length per token for attention)
against a bf16 matrix-multiply peak measured at the start of the same run. Embeddings of every
variant are compared with ours (cosine).

    nice -n 10 .venv/bin/python benchmarks/encode_bench.py                 # 512 passages, all variants
    nice -n 10 .venv/bin/python benchmarks/encode_bench.py --limit 16      # smoke check
    nice -n 10 .venv/bin/python benchmarks/encode_bench.py --variants ours,plain --json out.json
    nice -n 10 .venv/bin/python benchmarks/encode_bench.py --variants ours,int8 --model llm2vec-smollm2-135m

Needs the ``bench`` extra (``pip install -e .[bench]``) for sentence-transformers; the llm2vec
environment is created on first use under ``.cache/venv-llm2vec`` (``--llm2vec-venv``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llm2vec_search.encoder import load_encoder
from llm2vec_search.manifest import write_json_atomic
from llm2vec_search.models import home, resolve

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("ours", "plain", "st", "llm2vec", "int8")
LLM2VEC_REQUIREMENTS = ("torch==2.13.0", "llm2vec==0.2.3", "transformers==4.44.2")


# -- data and model facts ------------------------------------------------------------------------
def load_passages(path: Path, limit: int) -> list[str]:
    """The first ``limit`` documents of a BEIR corpus.jsonl, as title + " " + text."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                out.append((d.get("title", "") + " " + d.get("text", "")).strip())
                if len(out) == limit:
                    break
    return out


def forward_flops(model, lengths: list[int]) -> float:
    """Forward FLOPs of a decoder over sequences of ``lengths`` real tokens (no LM head)."""
    cfg = model.config.get_text_config()
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    dense = 2 * (n_params - n_embed)
    attn = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * getattr(
        cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return float(sum(dense * n + attn * n * n for n in lengths))


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype`` on this CPU/GPU, with the threads we use."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return (x * y).sum(1)


def timed(fn, warmup):
    warmup()
    t = time.perf_counter()
    out = fn()
    return np.asarray(out, dtype=np.float32), time.perf_counter() - t


# -- variants -------------------------------------------------------------------------------------
def run_ours(model: str, texts: list[str], max_length: int):
    enc = load_encoder(model, max_length=max_length, device="cpu")
    budget, specials = enc.text_budget(), max_length - enc.text_budget()
    counts = enc.count_tokens(texts)
    lengths = [min(n, budget) + specials for n in counts]  # the sequences the model sees
    flops = forward_flops(enc.model, lengths)
    emb, secs = timed(lambda: enc.encode(texts), lambda: enc.encode(texts[:8]))
    dtype = enc.dtype
    info = {"dtype": str(dtype).removeprefix("torch."), "truncated_texts": sum(n > budget for n in counts)}
    return emb, secs, lengths, flops, dtype, info


def run_int8(model: str, texts: list[str], max_length: int):
    """Ours in int8 (ONNX Runtime); the int8 model is built (once, cached) before the timing."""
    enc = load_encoder(model, max_length=max_length, dtype="int8")
    emb, secs = timed(lambda: enc.encode(texts), lambda: enc.encode(texts[:8]))
    return emb, secs, {"dtype": "int8"}


def run_plain(base_dir: Path, texts: list[str], max_length: int, batch_size: int):
    """(a) What one writes first: fp32, fixed batches in input order, padded to the longest."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModel.from_pretrained(base_dir, dtype=torch.float32).eval()
    model.config.is_causal = False

    def encode(batch_texts):
        out = []
        with torch.no_grad():
            for i in range(0, len(batch_texts), batch_size):
                b = tok(batch_texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt", add_special_tokens=False)
                h = model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1)).float().numpy())
        return np.concatenate(out)

    emb, secs = timed(lambda: encode(texts), lambda: encode(texts[:batch_size]))
    return emb, secs, {"dtype": "float32", "batch_size": batch_size}


def run_st(base_dir: Path, texts: list[str], max_length: int, batch_size: int, dtype: torch.dtype):
    """(b) sentence-transformers on the same model, plain-text input, bidirectional, mean pooling."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError as e:
        raise RuntimeError(f"sentence-transformers is not installed (pip install -e .[bench]): {e}") from None

    # By default sentence-transformers 6 renders a decoder LLM's input through its chat template;
    # this modality config feeds the tokenized text straight to forward(), like the other variants.
    transformer = Transformer(
        str(base_dir), model_kwargs={"dtype": dtype}, max_seq_length=max_length,
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    transformer.auto_model.config.is_causal = False
    st = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                             device="cpu")
    st.eval()

    def encode(batch_texts):
        return st.encode(batch_texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    # The tokenizer adds its special tokens here as ours does (SmolLM2 adds none); the cosine checks it.
    emb, secs = timed(lambda: encode(texts), lambda: encode(texts[:8]))
    return emb, secs, {"dtype": str(dtype).removeprefix("torch."), "batch_size": batch_size}


def transformers4_copy(base_dir: Path) -> Path:
    """A copy of a transformers-5 Llama directory that transformers 4.44 loads the same way.

    Four differences (measured, see the project's NOTES): the tokenizer class, BPE merges as
    "a b" strings, the tokenizer's input names, and rope_theta at the top level of config.json
    (transformers 4 ignores ``rope_parameters`` and would silently use 10000).
    """
    out = home() / "bench" / f"{base_dir.name}-transformers4"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent))
    (tmp / "model.safetensors").symlink_to((base_dir / "model.safetensors").resolve())
    cfg = json.loads((base_dir / "config.json").read_text())
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    tok_cfg = json.loads((base_dir / "tokenizer_config.json").read_text())
    tok_cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_input_names=["input_ids", "attention_mask"])
    tok_cfg.pop("backend", None)
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    tok = json.loads((base_dir / "tokenizer.json").read_text())
    merges = tok["model"].get("merges", [])
    tok["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (tmp / "tokenizer.json").write_text(json.dumps(tok))
    os.replace(tmp, out)
    return out


def ensure_llm2vec_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import llm2vec"], capture_output=True).returncode == 0:
        return python
    print(f"installing {' '.join(LLM2VEC_REQUIREMENTS)} into {venv} (once)", file=sys.stderr)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([python, "-m", "pip", "install", "-q", *LLM2VEC_REQUIREMENTS], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise RuntimeError(f"cannot install llm2vec: {(last or ['pip failed'])[-1]}")
    return python


def run_llm2vec(base_dir: Path, texts: list[str], max_length: int, batch_size: int, dtype: torch.dtype,
                venv: Path):
    """(c) the official package in its own venv; it times itself after a warm-up, like the others."""
    python = ensure_llm2vec_venv(venv)
    model_dir = transformers4_copy(base_dir)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        cmd = [str(python), str(Path(__file__).with_name("llm2vec_worker.py")), str(model_dir), tmp,
               "--max-length", str(max_length), "--batch-size", str(batch_size),
               "--dtype", str(dtype).removeprefix("torch."), "--threads", str(torch.get_num_threads())]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise RuntimeError(f"llm2vec worker failed: {(tail or ['no output'])[-1]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        emb = np.load(Path(tmp) / "embeddings.npy")
    return emb, result["seconds"], {"dtype": result["dtype"], "batch_size": batch_size,
                                    "llm2vec": result["version"], "transformers": result["transformers"]}


# -- report ---------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("/work/shared/data/scifact/corpus.jsonl"))
    p.add_argument("--model", default="smollm2-135m", help="a base model spec (all variants load its weights)")
    p.add_argument("--limit", type=int, default=512, help="passages to embed")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="fixed batch size of plain, st and llm2vec")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (all variants)")
    p.add_argument("--llm2vec-venv", type=Path, default=ROOT / ".cache" / "venv-llm2vec")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if bad := [v for v in variants if v not in VARIANTS]:
        p.error(f"unknown variants {bad}; valid: {', '.join(VARIANTS)}")
    if "ours" not in variants:
        variants.insert(0, "ours")  # the reference for ratios, dtype and agreement
    torch.set_num_threads(a.threads)

    texts = load_passages(a.corpus, a.limit)
    source = resolve(a.model)
    if source.adapters and set(variants) - {"ours", "int8"}:
        p.error("--model must be a base model for plain, st and llm2vec (they load the plain weights); "
                "ours and int8 take any encoder")
    peak_bf16 = matmul_peak(torch.bfloat16)
    peak_fp32 = matmul_peak(torch.float32)
    print(f"{len(texts)} passages, max_length {a.max_length}, {a.threads} threads; matmul peak "
          f"bf16 {peak_bf16 / 1e9:,.0f} GFLOP/s, fp32 {peak_fp32 / 1e9:,.0f} GFLOP/s", file=sys.stderr)

    rows: dict[str, dict] = {}
    ref, secs, lengths, flops, dtype, info = run_ours(a.model, texts, a.max_length)
    tokens = sum(lengths)
    rows["ours"] = {"seconds": secs, **info}
    embs = {"ours": ref}
    gc.collect()
    for v in variants[1:]:  # one after the other, never concurrently
        print(f"running {v} ...", file=sys.stderr)
        try:
            if v == "plain":
                emb, s, extra = run_plain(source.base_dir, texts, a.max_length, a.batch_size)
            elif v == "st":
                emb, s, extra = run_st(source.base_dir, texts, a.max_length, a.batch_size, dtype)
            elif v == "int8":
                emb, s, extra = run_int8(a.model, texts, a.max_length)
            else:
                emb, s, extra = run_llm2vec(source.base_dir, texts, a.max_length, a.batch_size, dtype,
                                            a.llm2vec_venv)
        except Exception as e:  # a failing variant is reported, the others still run
            rows[v] = {"error": f"{type(e).__name__}: {e}"}
            continue
        finally:
            gc.collect()
        rows[v] = {"seconds": s, **extra}
        embs[v] = emb

    for v, r in rows.items():
        if "error" in r:
            continue
        r["tokens_per_s"] = tokens / r["seconds"]
        r["mfu_vs_bf16_peak"] = flops / r["seconds"] / peak_bf16
        c = cosines(embs[v], ref)
        r["cosine_to_ours_min"], r["cosine_to_ours_mean"] = float(c.min()), float(c.mean())
    for r in rows.values():
        if "error" not in r:
            r["ours_speedup"] = rows["ours"]["tokens_per_s"] / r["tokens_per_s"]

    targets = {"plain": 3.0, "st": 1.2}
    print(f"\n{'variant':<8} {'dtype':<9} {'seconds':>8} {'tokens/s':>9} {'ours x':>7} {'MFU':>6} "
          f"{'cos min':>9}  target")
    for v, r in rows.items():
        if "error" in r:
            print(f"{v:<8} error: {r['error']}")
            continue
        t = targets.get(v)
        verdict = "" if t is None else f">= {t}x: {'met' if r['ours_speedup'] >= t else 'NOT met'}"
        if v == "int8":  # the target is the other way round: int8 >= 1.5x ours
            met = "met" if r["ours_speedup"] <= 1 / 1.5 else "NOT met"
            verdict = f"int8 {1 / r['ours_speedup']:.2f}x ours, >= 1.5x: {met}"
        print(f"{v:<8} {r['dtype']:<9} {r['seconds']:8.2f} {r['tokens_per_s']:9,.0f} {r['ours_speedup']:7.2f} "
              f"{r['mfu_vs_bf16_peak']:6.1%} {r['cosine_to_ours_min']:9.6f}  {verdict}")
    result = {
        "passages": len(texts), "tokens": tokens, "max_length": a.max_length, "model": a.model,
        "threads": a.threads, "batch_size": a.batch_size, "forward_gflop": flops / 1e9,
        "matmul_peak_gflops": {"bf16": peak_bf16 / 1e9, "fp32": peak_fp32 / 1e9},
        "torch": torch.__version__, "variants": rows,
    }
    if a.json:
        write_json_atomic(a.json, result)


if __name__ == "__main__":
    main()
