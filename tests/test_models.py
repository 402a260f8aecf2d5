"""Model resolution: the official LLM2Vec adapter layout, encoder directories, and refusals."""

import json

import numpy as np
import pytest
import torch

from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import ModelError
from llm2vec_search.models import resolve


def _random_adapter(base_dir, out, seed):
    """A LoRA adapter on the base model (no LM head) with non-zero B, as LLM2Vec's MNTP ships."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    peft.save_pretrained(out)
    return out


def test_official_layout_chain_equals_merging_by_hand(tiny_model_dir, tmp_path):
    mntp = _random_adapter(tiny_model_dir, tmp_path / "LLM2Vec-tiny-mntp", 1)
    sup = _random_adapter(tiny_model_dir, tmp_path / "LLM2Vec-tiny-mntp-supervised", 2)
    cfg = json.loads((sup / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(mntp)  # the supervised adapter names the MNTP one as its base
    (sup / "adapter_config.json").write_text(json.dumps(cfg))
    cfg = json.loads((mntp / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_model_dir)
    (mntp / "adapter_config.json").write_text(json.dumps(cfg))

    source = resolve(str(sup))
    assert source.adapters == (mntp.resolve(), sup.resolve()) and source.base_dir == tiny_model_dir.resolve()
    texts = ["the cat sleeps", "a vaccine and the immune cell"]
    got = load_encoder(str(sup), dtype="fp32", device="cpu").encode(texts)

    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(model, str(mntp)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(sup)).merge_and_unload()
    model.config.is_causal = False
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = []
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].mean(0)
        expected.append(torch.nn.functional.normalize(h, dim=-1).numpy())
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    plain = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu").encode(texts)
    assert np.abs(plain - got).max() > 1e-3


def test_refusals(tmp_path, tiny_model_dir):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        resolve("nope")
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve(str(tmp_path / "m.gguf"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="only pickled weights"):
        resolve(str(pickled))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in tiny_model_dir.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load"):
        load_encoder(str(corrupt), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="is not a model"):
        resolve(str(empty))


# -- GGUF ------------------------------------------------------------------------------------------
def _write_tiny_gguf(path, ref_dir):
    """A tiny Llama written as llama.cpp writes one (byte-level BPE vocabulary, q/k rows permuted,
    tied embeddings), with the same weights saved as a Hugging Face directory at ``ref_dir``."""
    import gguf
    from transformers import LlamaConfig, LlamaModel
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    def permute(w, n_head):  # llama.cpp's rotary layout; transformers undoes it when loading
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    spell = bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġ c", "a t"]
    tokens = [spell[b] for b in range(256)] + [m.replace(" ", "") for m in merges] + ["<|endoftext|>"]
    eos = len(tokens) - 1
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    model = LlamaModel(cfg).eval()
    for p in model.parameters():
        if p.ndim == 1:  # norms start at one; random ones make a mix-up of tensors show
            p.data.normal_(1, 0.2)
    model.save_pretrained(ref_dir)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([1] * eos + [3])  # the last one is a control token
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(eos)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["norm.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(2):
        for hf, gg in names.items():
            t = sd[f"layers.{i}.{hf}.weight"]
            t = permute(t, 4) if gg == "attn_q" else permute(t, 2) if gg == "attn_k" else t
            w.add_tensor(f"blk.{i}.{gg}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_is_converted_once_and_equals_its_source(tmp_path, monkeypatch):
    from transformers import AutoModel

    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    gguf_path = _write_tiny_gguf(tmp_path / "tiny.gguf", tmp_path / "ref")
    source = resolve(str(gguf_path))
    assert source.base_dir.parent == tmp_path / "home" / "models"
    assert sorted(p.suffix for p in source.base_dir.glob("*.safetensors")) == [".safetensors"]
    stamp = (source.base_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve(str(gguf_path)).base_dir == source.base_dir  # cached: not converted again
    assert (source.base_dir / "model.safetensors").stat().st_mtime_ns == stamp

    enc = load_encoder(str(gguf_path), dtype="fp32", device="cpu", causal=True)
    ids = enc.tokenizer("the cat", add_special_tokens=False)["input_ids"]
    assert enc.tokenizer.decode(ids) == "the cat"
    x = torch.tensor([ids])
    ref = AutoModel.from_pretrained(tmp_path / "ref").eval()
    with torch.no_grad():
        diff = (enc.model(input_ids=x).last_hidden_state - ref(input_ids=x).last_hidden_state).abs().max()
    assert diff < 1e-5  # dequantized F32 weights, q/k un-permuted: the same network


def test_corrupt_gguf_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot convert .*bad.gguf"):
        resolve(str(bad))
    assert not list((tmp_path / "home" / "models").glob("*"))  # no half-written cache entry


# -- hub, encoder directories, cache location -----------------------------------------------------
def test_hub_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        resolve("some-org/some-model-not-cached")
    assert "Hugging Face hub" in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    assert "\n" not in str(e.value)


def test_encoder_directory_brings_its_defaults(tiny_model_dir, tmp_path):
    enc_dir = tmp_path / "my-encoder"
    _random_adapter(tiny_model_dir, enc_dir / "mntp", 3)
    (enc_dir / "manifest.json").write_text(json.dumps({
        "kind": "llm2vec-search.encoder", "base_model": str(tiny_model_dir), "adapters": ["mntp"],
        "encoder": {"pooling": "weighted_mean", "max_length": 64, "query_instruction": "find the cat"},
    }))
    enc = load_encoder(str(enc_dir), dtype="fp32", device="cpu")
    assert (enc.config.pooling, enc.config.max_length, enc.config.query_instruction) == (
        "weighted_mean", 64, "find the cat")
    assert enc.source.adapters == ((enc_dir / "mntp").resolve(),)
    assert load_encoder(str(enc_dir), dtype="fp32", device="cpu", pooling="mean").config.pooling == "mean"
    np.testing.assert_allclose(enc.encode_queries(["a cat"]), enc.encode(["a cat"], "find the cat"))


def test_adapter_chain_errors(tmp_path, tiny_model_dir):
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(loop)}))
    with pytest.raises(ModelError, match="adapter chain too deep"):
        resolve(str(loop))
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(ModelError, match="names no base_model_name_or_path"):
        resolve(str(orphan))
    relative = tmp_path / "relative"
    _random_adapter(tiny_model_dir, relative, 4)
    cfg = json.loads((relative / "adapter_config.json").read_text())
    (tmp_path / "base").symlink_to(tiny_model_dir)
    cfg["base_model_name_or_path"] = "../base"  # relative to the adapter's own directory
    (relative / "adapter_config.json").write_text(json.dumps(cfg))
    assert resolve(str(relative)).base_dir == tiny_model_dir.resolve()


def test_cache_location(monkeypatch, tmp_path):
    from llm2vec_search.models import home

    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "l2v"))
    assert home() == tmp_path / "l2v"
    monkeypatch.delenv("L2V_SEARCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home() == tmp_path / "xdg" / "llm2vec-search"


def test_unknown_alias_names_the_aliases():
    with pytest.raises(ModelError, match="smollm2-135m, gemma3-270m"):
        resolve("smollm3")


def test_the_encoder_fingerprint_covers_the_weights(tmp_path, tiny_model_dir):
    """A checkpoint's safetensors replaced by another of the same architecture: the index refuses it."""
    import json
    import shutil

    from conftest import make_tiny_model

    from llm2vec_search.encoder import load_encoder
    from llm2vec_search.errors import IndexStateError
    from llm2vec_search.index import build_index
    from llm2vec_search.search import SearchIndex

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(["a cat", "a dog"])))
    build_index(corpus, "docs", tmp_path / "idx", encoder=load_encoder(str(model), dtype="fp32", device="cpu"),
                bm25=False, show_progress=False)
    other = make_tiny_model(tmp_path / "other", seed=1)
    shutil.copyfile(other / "model.safetensors", model / "model.safetensors")
    with pytest.raises(IndexStateError, match=r"built with a different encoder \(weights_sha256: '"):
        SearchIndex.open("docs", tmp_path / "idx").load_encoder(dtype="fp32", device="cpu")


def test_weight_hashes_are_cached_by_size_and_mtime(tmp_path, tiny_model_dir, monkeypatch):
    import os
    import shutil

    from llm2vec_search import models

    real, read = models.sha256_file, []
    monkeypatch.setattr(models, "sha256_file", lambda path: read.append(path) or real(path))
    source = models.resolve(str(shutil.copytree(tiny_model_dir, tmp_path / "model")))
    first = source.weights_sha256()
    assert len(read) == 1
    assert source.weights_sha256() == first and len(read) == 1  # a stat, no read
    weights = tmp_path / "model" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert source.weights_sha256() == first and len(read) == 2  # touched: read again
