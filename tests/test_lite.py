"""The transformers-free forward of merged Llama encoders (lite.py): the same bits as transformers'
model, used only once a transformers load left its record, and never where it cannot match."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from llm2vec_search import lite
from llm2vec_search.encoder import load_encoder
from llm2vec_search.models import merged_dir, resolve

TEXTS = ["the cat sleeps", "a vaccine and the immune cell of the red fox", "fox", "the river and the cat eats"]


def _load(spec, dtype="fp32", **kw):
    return load_encoder(str(spec), dtype=dtype, device="cpu", **kw)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_lite_forward_is_bit_identical_to_transformers(encoder_dir, dtype):
    full = _load(encoder_dir, dtype)  # transformers: merges, writes the entry and the lite record
    assert type(full.model).__name__ == "LlamaModel"
    assert (merged_dir(resolve(str(encoder_dir))) / lite.RECORD).is_file()
    light = _load(encoder_dir, dtype)
    assert isinstance(light.model, lite.LiteLlama)
    assert light.fingerprint == full.fingerprint and light.dtype == full.dtype
    for instruction in (None, "retrieve the cat"):
        np.testing.assert_array_equal(light.encode(TEXTS, instruction), full.encode(TEXTS, instruction))
        np.testing.assert_array_equal(light.encode(TEXTS[:1], instruction), full.encode(TEXTS[:1], instruction))
    assert light.tokenize(TEXTS, "retrieve the cat") == full.tokenize(TEXTS, "retrieve the cat")
    batch = next(full.batches(TEXTS))  # padded: the masked path; one text alone: no mask, grouped KV heads
    with torch.inference_mode():
        padded, pad_mask = batch.input_ids, batch.attention_mask
        for ids, mask in ((padded, pad_mask), (padded[:1, :3], pad_mask[:1, :3])):
            a = full.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            b = light.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            assert torch.equal(a.last_hidden_state, b.last_hidden_state)
            for layer in range(full.model.config.num_hidden_layers):  # what tokens.py reads
                assert torch.equal(a.hidden_states[layer], b.hidden_states[layer])


def test_a_query_process_imports_no_transformers(encoder_dir):
    _load(encoder_dir)  # the entry and its record
    code = ("import sys; from llm2vec_search.encoder import load_encoder; "
            f"e = load_encoder({str(encoder_dir)!r}, dtype='fp32', device='cpu'); e.encode(['the cat']); "
            "print(type(e.model).__name__, 'transformers' in sys.modules, 'peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LiteLlama", "False", "False"]


def test_where_lite_does_not_apply_transformers_loads(encoder_dir, tiny_model_dir, monkeypatch):
    _load(encoder_dir)
    entry = merged_dir(resolve(str(encoder_dir)))
    assert isinstance(_load(encoder_dir).model, lite.LiteLlama)
    assert type(_load(encoder_dir, attn_implementation="eager").model).__name__ == "LlamaModel"
    assert type(_load(encoder_dir, causal=True).model).__name__ == "LlamaModel"
    assert type(_load(tiny_model_dir).model).__name__ == "LlamaModel"  # no adapters: no merged entry
    monkeypatch.setenv("L2V_SEARCH_LITE", "0")
    assert type(_load(encoder_dir).model).__name__ == "LlamaModel"
    monkeypatch.delenv("L2V_SEARCH_LITE")
    (entry / lite.TOKENIZER).unlink()  # a damaged entry: transformers loads, and the record is left anew
    assert type(_load(encoder_dir).model).__name__ == "LlamaModel"


def test_supported_configs():
    base = {"model_type": "llama", "hidden_act": "silu", "rope_theta": 10000.0}
    assert lite.supported(base)
    assert lite.supported({**base, "rope_parameters": {"rope_theta": 1e5, "rope_type": "default"}})
    assert not lite.supported({**base, "model_type": "gemma3_text"})
    assert not lite.supported({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    assert not lite.supported({**base, "attention_bias": True})
    assert not lite.supported({**base, "hidden_act": "gelu"})
    assert not lite.supported({"model_type": "llama"})  # no rope_theta: not guessed


def test_word_states_and_compiled_forward_through_lite(encoder_dir):
    full = _load(encoder_dir)
    light = _load(encoder_dir)
    assert isinstance(light.model, lite.LiteLlama)
    for layer in (1, -1):
        for a, b in zip(full.encode_tokens(TEXTS, layer=layer), light.encode_tokens(TEXTS, layer=layer)):
            assert a.tokens == b.tokens and a.spans == b.spans
            np.testing.assert_array_equal(a.vectors, b.vectors)
    eager = light.encode(TEXTS[:1])
    assert light.compile([16], max_rows=1) is not None
    np.testing.assert_allclose(light.encode(TEXTS[:1]), eager, atol=1e-5)
