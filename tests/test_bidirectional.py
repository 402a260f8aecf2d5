"""Bidirectional attention for every supported family and attention implementation, on tiny random models."""

import pytest
import torch
from conftest import make_tiny_model

from llm2vec_search.bidirectional import SUPPORTED_MODEL_TYPES, is_bidirectional
from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import ModelError
from llm2vec_search.pooling import pool

# Sliding windows shorter than the probe sequences, so a leftover causal window would show.
FAMILIES = {
    "llama": {},
    "mistral": {"sliding_window": 4},
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    "qwen3": {},
    "gemma": {},
    "gemma2": {"sliding_window": 4},
    "gemma3_text": {"sliding_window": 4},
}
IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2")


def _flash_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    return {f: make_tiny_model(tmp_path_factory.mktemp(f), f, **kw) for f, kw in FAMILIES.items()}


def _load(path, impl, causal=False):
    if impl == "flash_attention_2" and not _flash_available():
        pytest.skip("flash attention needs CUDA and the flash-attn package")
    device = "cuda" if impl == "flash_attention_2" else "cpu"
    dtype = "bf16" if impl == "flash_attention_2" else "fp32"
    try:
        return load_encoder(str(path), dtype=dtype, device=device, attn_implementation=impl, causal=causal)
    except ModelError as e:
        if "does not support" in str(e) or "not available" in str(e):
            pytest.skip(f"transformers offers no {impl} for this family: {e}")
        raise


def _hidden(enc, ids, mask):
    return enc.model(input_ids=ids.to(enc.device), attention_mask=mask.to(enc.device)).last_hidden_state.float().cpu()


def test_every_supported_family_is_covered():
    assert set(FAMILIES) == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_later_token_reaches_first_token(family_dirs, family, impl):
    """Full-attention families: the last of 12 tokens reaches the first. Sliding-window families keep
    their window (made symmetric, as transformers does for bidirectional use): a later token inside
    the window reaches the first, which a leftover causal window would forbid."""
    enc = _load(family_dirs[family], impl)
    ids = torch.arange(10, 22).unsqueeze(0)  # 12 tokens, longer than the sliding windows (4)
    changed = ids.clone()
    changed[0, 2 if "sliding_window" in FAMILIES[family] else -1] = 40
    mask = torch.ones_like(ids)
    with torch.no_grad():
        delta = (_hidden(enc, ids, mask)[0, 0] - _hidden(enc, changed, mask)[0, 0]).abs().max()
    assert delta > 1e-5, "the first token did not see the last one"
    causal = _load(family_dirs[family], impl, causal=True)
    with torch.no_grad():
        delta = (_hidden(causal, ids, mask)[0, 0] - _hidden(causal, changed, mask)[0, 0]).abs().max()
    assert delta == 0, "--causal must keep the first token blind to later ones"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_left_right_and_no_padding_agree(family_dirs, family, impl):
    enc = _load(family_dirs[family], impl)
    seq = torch.arange(10, 19)  # 9 real tokens
    short = torch.arange(30, 34)  # a shorter neighbour forces padding
    pad = enc._pad_id
    with torch.no_grad():
        alone = _hidden(enc, seq.unsqueeze(0), torch.ones(1, 9, dtype=torch.long))
        reference = pool(alone, torch.ones(1, 9), "mean")[0]
        for side in ("left", "right"):
            ids = torch.full((2, 9), pad)
            mask = torch.zeros(2, 9, dtype=torch.long)
            ids[0], mask[0] = seq, 1
            if side == "right":
                ids[1, :4], mask[1, :4] = short, 1
            else:
                ids[1, 5:], mask[1, 5:] = short, 1
            # The padded row: pool its real tokens only.
            hidden = _hidden(enc, ids, mask)
            assert (pool(hidden[:1], mask[:1], "mean")[0] - reference).abs().max() < 1e-4
            padded_short = pool(hidden[1:], mask[1:], "mean")[0]
            single = pool(_hidden(enc, short.unsqueeze(0), torch.ones(1, 4, dtype=torch.long)), torch.ones(1, 4),
                          "mean")[0]
            assert (padded_short - single).abs().max() < 1e-4, f"{side} padding changed the embedding"


def test_unsupported_architecture_is_refused_but_loads_causal(tmp_path):
    path = make_tiny_model(tmp_path / "gpt2", "gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=128)
    with pytest.raises(ModelError, match="not supported for bidirectional attention; supported: llama"):
        load_encoder(str(path), dtype="fp32", device="cpu")
    enc = load_encoder(str(path), dtype="fp32", device="cpu", causal=True)
    assert not is_bidirectional(enc.model)
    assert enc.encode(["the cat"]).shape == (1, 64)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padding_content_is_ignored(family_dirs, family):
    """Whatever ids sit under the padding, the real tokens' states do not change (padding stays masked
    in both directions, which a bidirectional mask could get wrong)."""
    enc = _load(family_dirs[family], "sdpa" if family != "gemma2" else "eager")
    ids = torch.tensor([[10, 11, 12, 13, 14, 15, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0, 0]])
    other = ids.clone()
    other[0, 6:] = torch.tensor([40, 41, 42])
    with torch.no_grad():
        a, b = _hidden(enc, ids, mask)[0, :6], _hidden(enc, other, mask)[0, :6]
    assert (a - b).abs().max() < 1e-5
