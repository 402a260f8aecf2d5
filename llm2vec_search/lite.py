"""A transformers-free forward for merged Llama-family encoders, so a one-shot query skips
transformers' import graph.

Importing transformers' Llama model costs ~1.6 s of a one-shot ``query`` on a Sapphire Rapids
(2.46 s of imports in all, torch 0.72 s of it): its model code pulls in ``torch.distributed.tensor``,
``torch._dynamo``, ``scipy.optimize`` and a dependency check that an encoder's forward never uses
(``benchmarks/README.md``). An encoder whose adapters are merged (``merged.py``) is one set of
weights in a standard layout, and for the Llama architecture its bidirectional forward is a few
standard torch operations; this module runs exactly those, in transformers' order and dtypes, so
the vectors are the same bits (``tests/test_lite.py`` compares them with transformers' model,
fp32 and bf16, padded and not, the hidden states of every layer too).

It is used only where it is known to match: a CPU, bidirectional attention through SDPA, a Llama
config without biases, RoPE scaling or tensor-parallel slices, and a merged entry next to which a
transformers load left ``l2v_lite.json`` (the tokenizer's backend as transformers configured it,
and its special ids). Everything else, and training, loads through transformers as before;
``L2V_SEARCH_LITE=0`` turns it off.

    $L2V_SEARCH_HOME/merged/<key>/
        config.json, model.safetensors   written by merged.py
        l2v_lite_tokenizer.json          the tokenizer backend (``tokenizers``)
        l2v_lite.json                    special ids; written last (the entry is usable)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .int8 import FastTokenizer
from .manifest import read_json, write_json_atomic

RECORD, TOKENIZER = "l2v_lite.json", "l2v_lite_tokenizer.json"


def enabled() -> bool:
    return os.environ.get("L2V_SEARCH_LITE", "1") != "0"


def supported(config: dict[str, Any]) -> bool:
    """Whether :class:`LiteLlama` computes what transformers' ``LlamaModel`` computes for ``config``."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return (
        config.get("model_type") == "llama"
        and config.get("hidden_act", "silu") == "silu"
        and not config.get("attention_bias", False)
        and not config.get("mlp_bias", False)
        and config.get("pretraining_tp", 1) == 1
        and rope.get("rope_type", rope.get("type", "default")) == "default"
        and _rope_theta(config) is not None
    )


def _rope_theta(config: dict[str, Any]) -> float | None:
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta"))
    return float(theta) if theta is not None else None


class LiteConfig:
    """The few config fields callers read (``get_text_config().hidden_size``, ``num_hidden_layers``)."""

    def __init__(self, config: dict[str, Any]):
        self.__dict__.update(config)
        self.head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]

    def get_text_config(self):
        return self


class _Output:
    def __init__(self, last_hidden_state, hidden_states=None):
        self.last_hidden_state, self.hidden_states = last_hidden_state, hidden_states

    def __getitem__(self, i):
        return (self.last_hidden_state, self.hidden_states)[i]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LiteLlama(nn.Module):
    """A Llama decoder's bidirectional forward (``input_ids``, ``attention_mask`` -> hidden states)."""

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor]):
        super().__init__()
        self.config = LiteConfig(config)
        c = self.config
        self.eps = float(c.rms_norm_eps)
        self.heads, self.kv_heads = int(c.num_attention_heads), int(c.num_key_value_heads)
        self.scaling = c.head_dim**-0.5
        self.params = nn.ParameterDict({k.replace(".", "/"): nn.Parameter(v, requires_grad=False)
                                        for k, v in weights.items()})
        dtype = next(iter(weights.values())).dtype
        inv_freq = 1.0 / (_rope_theta(config) ** (torch.arange(0, c.head_dim, 2, dtype=torch.float) / c.head_dim))
        # transformers' model.to(dtype) casts this buffer too, and its forward casts it back to float
        self.register_buffer("inv_freq", inv_freq.to(dtype), persistent=False)

    def w(self, name: str) -> torch.Tensor:
        return self.params[name.replace(".", "/")]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, **_: Any) -> _Output:
        hidden = F.embedding(input_ids, self.w("embed_tokens.weight"))
        batch, length = input_ids.shape
        positions = torch.arange(length, device=hidden.device).unsqueeze(0)
        freqs = positions[..., None].float() * self.inv_freq.to(device=hidden.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(hidden.dtype).unsqueeze(1), emb.sin().to(hidden.dtype).unsqueeze(1)
        mask = None  # transformers' bidirectional mask: None without padding, else keys masked
        # (compiled: always the mask, no data-dependent branch; compiled vectors are close, not equal)
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        states = [hidden] if output_hidden_states else None
        for i in range(int(self.config.num_hidden_layers)):
            p = f"layers.{i}."
            residual = hidden
            x = _rms_norm(hidden, self.w(p + "input_layernorm.weight"), self.eps)
            shape = (batch, length, -1, self.config.head_dim)
            q = F.linear(x, self.w(p + "self_attn.q_proj.weight")).view(shape).transpose(1, 2)
            k = F.linear(x, self.w(p + "self_attn.k_proj.weight")).view(shape).transpose(1, 2)
            v = F.linear(x, self.w(p + "self_attn.v_proj.weight")).view(shape).transpose(1, 2)
            q = (q * cos) + (_rotate_half(q) * sin)
            k = (k * cos) + (_rotate_half(k) * sin)
            kw = {}
            if self.heads != self.kv_heads:
                if mask is None:
                    kw["enable_gqa"] = True
                else:
                    k = _repeat_kv(k, self.heads // self.kv_heads)
                    v = _repeat_kv(v, self.heads // self.kv_heads)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                                  is_causal=False, **kw)
            attn = attn.transpose(1, 2).reshape(batch, length, -1)
            hidden = residual + F.linear(attn, self.w(p + "self_attn.o_proj.weight"))
            residual = hidden
            x = _rms_norm(hidden, self.w(p + "post_attention_layernorm.weight"), self.eps)
            gate = F.silu(F.linear(x, self.w(p + "mlp.gate_proj.weight")))
            x = F.linear(gate * F.linear(x, self.w(p + "mlp.up_proj.weight")), self.w(p + "mlp.down_proj.weight"))
            hidden = residual + x
            if states is not None:
                states.append(hidden)
        hidden = _rms_norm(hidden, self.w("norm.weight"), self.eps)
        if states is not None:
            states[-1] = hidden
        return _Output(hidden, tuple(states) if states is not None else None)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, heads, length, dim = x.shape
    return x[:, :, None, :, :].expand(batch, heads, n_rep, length, dim).reshape(batch, heads * n_rep, length, dim)


class LiteTokenizer(FastTokenizer):
    """The tokenizer backend transformers configured, with the special ids the encoder reads."""

    is_fast = True  # character offsets (tokens.py)

    def __init__(self, entry: Path, record: dict[str, Any]):
        super().__init__(entry / TOKENIZER)
        self.eos_token_id, self.pad_token_id = record["eos_token_id"], record["pad_token_id"]

    def convert_ids_to_tokens(self, ids):
        return [self.backend.id_to_token(int(i)) for i in ids]


def load(entry: Path, dtype: torch.dtype) -> tuple[LiteLlama, LiteTokenizer] | None:
    """The model and tokenizer of a merged ``entry`` on the CPU in ``dtype``, or None when the entry
    is not one this module runs (the caller loads through transformers)."""
    from safetensors.torch import load_file

    try:
        record = read_json(entry / RECORD)
        config = read_json(entry / "config.json")
        if not supported(config):
            return None
        files = sorted(entry.glob("*.safetensors"))
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(load_file(f))
        weights = {k.removeprefix("model."): v.to(dtype) for k, v in weights.items()}
        model = LiteLlama(config, weights).eval()
        return model, LiteTokenizer(entry, record)
    except Exception:  # pruned or damaged (tokenizers raises a bare Exception): transformers loads it
        return None


def leave_record(entry: Path, model, tokenizer) -> None:
    """After a transformers load of a merged ``entry``: note what :func:`load` needs, once. Best effort."""
    if (entry / RECORD).is_file() or not (entry / "config.json").is_file():
        return
    try:
        if not supported(read_json(entry / "config.json")):
            return
        tmp = entry / f".{TOKENIZER}.{os.getpid()}"
        tmp.write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
        os.replace(tmp, entry / TOKENIZER)
        write_json_atomic(entry / RECORD, {"eos_token_id": tokenizer.eos_token_id,
                                           "pad_token_id": tokenizer.pad_token_id,
                                           "model_type": model.config.model_type})
    except (OSError, ValueError, AttributeError):
        pass
