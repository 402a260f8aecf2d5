"""Building an int8 cache entry (:mod:`llm2vec_search.int8`): needs torch, transformers and onnx.

    float encoder (fp32, eager attention, adapters merged)
      ─ SmoothQuant: per-channel scales moved from the activations into the weights, exactly
      ─ torch.onnx.export: input_ids, attention_mask, pool_mask -> pooled embedding
      ─ onnxruntime.quantization.quantize_dynamic: int8 weights per output channel
      ─ written under a temporary name, renamed into place under a lock

SmoothQuant (Xiao et al., 2023): a few activation channels of an LLM are far larger than the rest,
and one int8 scale per row of activations then rounds the others away. Dividing each channel by
``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` and multiplying the weight's column by it leaves
the product unchanged but moves the outliers into the weights, which are quantized per channel.
The division is folded into the layer before, so the graph has no extra op: the RMSNorm weights
before q/k/v and gate/up, and up_proj's rows before down_proj (its input is silu(gate) * up).
The activation ranges come from a calibration pass over the bundled sample corpus.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder
from .errors import ModelError, UsageError
from .int8 import INSTALL, MODEL, QUANTIZATION, TOKENIZER, entry_dir, is_complete, write_meta
from .manifest import atomic, library_versions, locked
from .pooling import pool

log = logging.getLogger(__name__)
CALIBRATION_TEXTS = 128  # documents of the bundled sample corpus, plus its queries with the instruction


class _Pooled(torch.nn.Module):
    """The exported graph: the decoder and the pooling, no normalization."""

    def __init__(self, model: torch.nn.Module, pooling: str):
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, input_ids, attention_mask, pool_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, pool_mask, self.pooling)


def calibration_texts() -> tuple[list[str], list[str]]:
    """(documents, queries) of the bundled sample corpus."""
    import json

    from .index import sample_dataset

    folder = sample_dataset()
    docs = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs.append(f"{r.get('title', '')} {r.get('text', '')}".strip())
            if len(docs) >= CALIBRATION_TEXTS:
                break
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    return docs, queries


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    inner = getattr(model, "model", model)  # a CausalLM wraps the decoder; our encoders are the decoder
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ModelError(f"int8: no decoder layers found in {type(model).__name__}")
    return list(layers)


@torch.no_grad()
def smooth(encoder: Encoder, alpha: float) -> None:
    """Apply SmoothQuant in place to ``encoder.model`` (fp32), calibrated on the sample corpus."""
    layers = _layers(encoder.model)
    needed = ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp")
    if not all(hasattr(layer, n) for layer in layers for n in needed):
        raise ModelError("int8: SmoothQuant needs Llama-style layers (input/post-attention norms, attention, MLP)")
    ranges: dict[tuple[int, str], torch.Tensor] = {}

    def observe(key):
        def hook(_module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            ranges[key] = torch.maximum(ranges[key], x) if key in ranges else x
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.q_proj.register_forward_pre_hook(observe((i, "attn"))))
        handles.append(layer.mlp.gate_proj.register_forward_pre_hook(observe((i, "mlp"))))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(observe((i, "down"))))
    quiet = logging.getLogger("llm2vec_search.encoder")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # long calibration documents are cut to max_length: not the user's texts
    try:
        docs, queries = calibration_texts()
        encoder.encode(docs, encoder.config.document_instruction or None)
        encoder.encode_queries(queries)
    finally:
        quiet.setLevel(level)
        for h in handles:
            h.remove()

    def scales(act: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        w = torch.stack([w.abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)
        return (act.clamp(min=1e-5).pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)

    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        s = scales(ranges[(i, "attn")], [m.weight for m in qkv])
        layer.input_layernorm.weight.div_(s)
        for m in qkv:
            m.weight.mul_(s)
        s = scales(ranges[(i, "mlp")], [mlp.gate_proj.weight, mlp.up_proj.weight])
        layer.post_attention_layernorm.weight.div_(s)
        for m in (mlp.gate_proj, mlp.up_proj):
            m.weight.mul_(s)
        s = scales(ranges[(i, "down")], [mlp.down_proj.weight])
        mlp.up_proj.weight.div_(s[:, None])
        if mlp.up_proj.bias is not None:
            mlp.up_proj.bias.div_(s)
        mlp.down_proj.weight.mul_(s)


def export_onnx(encoder: Encoder, path: Path) -> None:
    """The float graph of ``encoder`` (its model must be fp32 on the CPU) as ONNX, dynamic in batch
    and length."""
    texts = ["an example document of several words, to trace the graph", "short"]
    seqs, starts = encoder.tokenize(texts, "a retrieval instruction")
    batch = encoder._collate(seqs, starts, [0, 1])  # two lengths: padding is in the traced graph
    graph = _Pooled(encoder.model, encoder.config.pooling).eval()
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "pool_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (batch.input_ids, batch.attention_mask, batch.pool_mask), str(path),
                          input_names=["input_ids", "attention_mask", "pool_mask"], output_names=["embedding"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def optimize_offline(src: Path, dst: Path) -> None:
    """ONNX Runtime's graph optimizations (fusions, constant folding), done once and saved: a
    session then loads ``dst`` with optimizations off, in ~1 s instead of ~6 s on a 2-core CPU
    (the saved graph uses this ONNX Runtime version's fused ops, which the cache key names)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable across CPUs
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def build(encoder: Encoder) -> Path:
    """The int8 entry of ``encoder`` (fp32, eager attention, on the CPU), built if missing. Two
    processes building the same entry wait for each other; the second finds it done."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise UsageError(INSTALL) from None
    identity = encoder.identity()
    entry = entry_dir(identity)
    if is_complete(entry):
        return entry
    with locked(entry.parent.parent / "locks" / f"int8-{entry.name}.lock"):
        if is_complete(entry):
            return entry
        t0 = time.perf_counter()
        log.warning("building the int8 model of this encoder (once; cached in %s)", entry)
        with atomic(entry) as tmp:
            tmp.mkdir()
            smooth(encoder, QUANTIZATION["smoothquant_alpha"])
            export_onnx(encoder, tmp / "float.onnx")
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # ORT's quantizer logs advice to the root logger
            try:
                quantize_dynamic(str(tmp / "float.onnx"), str(tmp / "quantized.onnx"), weight_type=QuantType.QInt8,
                                 per_channel=QUANTIZATION["per_channel"])
            finally:
                root.setLevel(level)
            (tmp / "float.onnx").unlink()
            optimize_offline(tmp / "quantized.onnx", tmp / MODEL)
            (tmp / "quantized.onnx").unlink()
            (tmp / TOKENIZER).write_text(encoder.tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
            meta: dict[str, Any] = {
                "model": identity["model"], "pooling": identity["pooling"], "causal": identity["causal"],
                "dim": encoder.dim, "prefix": encoder._prefix, "suffix": encoder._suffix, "pad_id": encoder._pad_id,
                "quantization": QUANTIZATION, "seconds": round(time.perf_counter() - t0, 1),
                "library_versions": library_versions("onnxruntime", "onnx"),
            }
            write_meta(tmp, meta)  # last: its presence marks a complete entry
    return entry
