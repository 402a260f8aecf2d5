"""Pooling modes and instruction exclusion, checked against numpy on the model's own hidden states."""

import numpy as np
import pytest
import torch

from llm2vec_search.encoder import load_encoder
from llm2vec_search.pooling import POOLING_MODES, pool

TEXTS = ["the cat sleeps in the house", "a dog", "the immune cell and the virus in the blood of the patient"]


def numpy_pool(h: np.ndarray, m: np.ndarray, mode: str) -> np.ndarray:
    """The definition, one row at a time: ``h`` (B, T, H), ``m`` (B, T) 1 = pooled token."""
    out = []
    for hi, mi in zip(h, m):
        idx = np.flatnonzero(mi)
        if mode == "mean":
            out.append(hi[idx].mean(0))
        elif mode == "weighted_mean":  # the k-th pooled token weighs k (SGPT)
            w = np.arange(1, len(idx) + 1, dtype=np.float64)
            out.append((hi[idx] * w[:, None]).sum(0) / w.sum())
        elif mode == "eos":
            out.append(hi[idx[-1]])
        else:
            out.append(hi[idx[0]])
    return np.stack(out)


@pytest.fixture(scope="module", params=POOLING_MODES)
def encoder(request, tiny_model_dir):
    return load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", pooling=request.param, max_length=64)


def _alone(enc, ids: list[int]) -> np.ndarray:
    x = torch.tensor([ids])
    with torch.no_grad():
        return enc.model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0].numpy()


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_matches_numpy_with_any_padding(mode):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 7, 5)).astype(np.float32)
    m = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]],
                 dtype=np.float32)
    got = pool(torch.from_numpy(h), torch.from_numpy(m), mode).numpy()
    np.testing.assert_allclose(got, numpy_pool(h, m, mode), atol=1e-5)
    # bf16 states are pooled in fp32
    got16 = pool(torch.from_numpy(h).bfloat16(), torch.from_numpy(m), mode)
    assert got16.dtype == torch.float32


def test_unknown_pooling_lists_valid_modes():
    with pytest.raises(ValueError, match="valid pooling modes are: mean, weighted_mean, eos, bos"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "max")


def test_encode_pools_each_text_as_numpy_does(encoder):
    """A right-padded, length-sorted batch gives each text the pooling of its own unpadded states."""
    mode = encoder.config.pooling
    got = encoder.encode(TEXTS, normalize=False)
    tok = encoder.tokenizer
    for text, row in zip(TEXTS, got):
        ids = encoder._prefix + tok(text, add_special_tokens=False)["input_ids"]
        ids += [tok.eos_token_id] if mode == "eos" else []  # eos pooling pools an appended EOS token
        mask = np.ones((1, len(ids)), dtype=np.float32)
        np.testing.assert_allclose(row, numpy_pool(_alone(encoder, ids)[None], mask, mode)[0], atol=1e-4)


def test_left_padded_batch_pools_the_same(encoder):
    """Built by hand (Encoder pads on the right): left padding, pool mask over the real tokens."""
    mode = encoder.config.pooling
    right = next(iter(encoder.batches(TEXTS)))
    lengths = right.attention_mask.sum(1)
    width = right.input_ids.shape[1]
    ids = torch.full_like(right.input_ids, encoder._pad_id)
    attn, pmask = torch.zeros_like(right.attention_mask), torch.zeros_like(right.pool_mask)
    for r, n in enumerate(lengths.tolist()):
        ids[r, width - n :] = right.input_ids[r, :n]
        attn[r, width - n :] = 1
        pmask[r, width - n :] = right.pool_mask[r, :n]
    with torch.no_grad():
        hidden = encoder.model(input_ids=ids, attention_mask=attn).last_hidden_state
        left = pool(hidden, pmask, mode).numpy()
        expected = numpy_pool(hidden.numpy(), pmask.numpy(), mode)
    np.testing.assert_allclose(left, expected, atol=1e-5)
    np.testing.assert_allclose(left, encoder.forward(right).detach().numpy(), atol=1e-4)


def test_instruction_is_attended_but_not_pooled(encoder):
    mode = encoder.config.pooling
    text, instr = "the cat sleeps in the house", "search the index for a document"
    got = encoder.encode([text], instr, normalize=False)[0]
    tok = encoder.tokenizer
    instr_ids = tok(instr, add_special_tokens=False)["input_ids"]
    text_ids = tok(text, add_special_tokens=False)["input_ids"]
    suffix = [tok.eos_token_id] if mode == "eos" else []
    ids = encoder._prefix + instr_ids + text_ids + suffix  # ids concatenated, no separator string
    mask = np.zeros((1, len(ids)), dtype=np.float32)
    mask[0, len(encoder._prefix) + len(instr_ids) :] = 1
    np.testing.assert_allclose(got, numpy_pool(_alone(encoder, ids)[None], mask, mode)[0], atol=1e-4)
    # Attended: the instruction changes the text's states (bidirectional model).
    assert np.abs(got - encoder.encode([text], None, normalize=False)[0]).max() > 1e-4


def test_per_text_instructions(tiny_model_dir):
    enc = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", max_length=64)
    texts = ["the cat", "the dog", "a fish"]
    instructions = ["find a claim", None, "find a claim"]
    got = enc.encode(texts[:1], "find a claim"), enc.encode(texts[1:2]), enc.encode(texts[2:], "find a claim")
    seqs, starts = enc.tokenize(texts, instructions)
    n_instr = len(enc.tokenizer("find a claim", add_special_tokens=False)["input_ids"])
    assert starts == [n_instr, 0, n_instr] and len(seqs[0]) == n_instr + 2
    batch = enc._collate(seqs, starts, [0, 1, 2])
    with torch.no_grad():
        together = torch.nn.functional.normalize(enc.forward(batch), dim=-1).numpy()
    np.testing.assert_allclose(together, np.concatenate(got), atol=1e-5)


def test_tokenizer_specials_stay_outside_the_instruction_and_the_pool(tmp_path):
    """A tokenizer that adds <bos> (like Gemma's): <bos> comes first, then the instruction, then the
    text; <bos> is attended to but pooled by no mode."""
    from conftest import make_tiny_model
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    path = make_tiny_model(tmp_path / "bos")
    tok = AutoTokenizer.from_pretrained(path)
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    tok.save_pretrained(path)
    enc = load_encoder(str(path), dtype="fp32", device="cpu", max_length=64)
    assert enc._prefix == [tok.bos_token_id]
    seqs, starts = enc.tokenize(["the cat"], "find")
    assert seqs[0][0] == tok.bos_token_id and starts == [2]
    got = enc.encode(["the cat"], "find", normalize=False)[0]
    mask = np.array([[0, 0, 1, 1]], dtype=np.float32)
    np.testing.assert_allclose(got, numpy_pool(_alone(enc, seqs[0])[None], mask, "mean")[0], atol=1e-4)
