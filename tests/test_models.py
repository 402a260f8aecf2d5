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
