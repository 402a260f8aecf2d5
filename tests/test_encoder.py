"""Pooling, instruction exclusion, batching and truncation, checked against direct computations."""

import numpy as np
import pytest
import torch

from llm2vec_search.encoder import plan_batches
from llm2vec_search.errors import UsageError
from llm2vec_search.pooling import pool


def numpy_pool(h: np.ndarray, m: np.ndarray, mode: str) -> np.ndarray:
    out = []
    for hi, mi in zip(h, m):
        idx = np.flatnonzero(mi)
        if mode == "mean":
            out.append(hi[idx].mean(0))
        elif mode == "weighted_mean":
            w = np.arange(1, len(idx) + 1, dtype=np.float64)
            out.append((hi[idx] * w[:, None]).sum(0) / w.sum())
        elif mode == "eos":
            out.append(hi[idx[-1]])
        else:
            out.append(hi[idx[0]])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "eos", "bos"])
def test_pooling_matches_numpy_with_any_padding(mode):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 7, 5)).astype(np.float32)
    m = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]], dtype=np.float32)
    got = pool(torch.from_numpy(h), torch.from_numpy(m), mode).numpy()
    np.testing.assert_allclose(got, numpy_pool(h, m, mode), atol=1e-5)


def test_unknown_pooling_lists_valid_modes():
    with pytest.raises(ValueError, match="valid pooling modes are: mean, weighted_mean, eos, bos"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "max")


@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "eos", "bos"])
def test_instruction_is_attended_but_not_pooled(tiny_model_dir, mode):
    from llm2vec_search.encoder import load_encoder

    enc = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", pooling=mode)
    text, instr = "the cat sleeps in the house", "search the index for a document"
    got = enc.encode([text], instr, normalize=False)[0]
    tok = enc.tokenizer
    instr_ids = tok(instr, add_special_tokens=False)["input_ids"]
    text_ids = tok(text, add_special_tokens=False)["input_ids"]
    suffix = [tok.eos_token_id] if mode == "eos" else []
    ids = torch.tensor([enc._prefix + instr_ids + text_ids + suffix])
    with torch.no_grad():
        hidden = enc.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy()
    start = len(enc._prefix) + len(instr_ids)
    mask = np.zeros((1, ids.shape[1]), dtype=np.float32)
    mask[0, start:] = 1
    np.testing.assert_allclose(got, numpy_pool(hidden[None], mask, mode)[0], atol=1e-4)
    # The instruction changes the text's token states (attended) without being pooled.
    assert np.abs(got - enc.encode([text], None, normalize=False)[0]).max() > 1e-4


def test_batched_encoding_equals_one_at_a_time(tiny_encoder):
    texts = ["a", "the dog runs to the river and the cat sleeps", "cell protein", "the " * 40 + "end"]
    together = tiny_encoder.encode(texts)
    alone = np.concatenate([tiny_encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)


def test_plan_batches_respects_the_token_budget():
    lengths = [5, 100, 30, 30, 7, 64, 64, 1]
    batches = plan_batches(lengths, batch_tokens=128, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 128 and len(b) <= 3
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_truncation_is_counted_and_reported(tiny_encoder, caplog):
    before = tiny_encoder.stats.truncated
    with caplog.at_level("WARNING"):
        tiny_encoder.encode(["cat " * 500, "dog"])
    assert tiny_encoder.stats.truncated == before + 1
    assert "1 of 2 texts were longer than max_length=128 tokens" in caplog.text


def test_bad_texts(tiny_encoder):
    assert tiny_encoder.encode([]).shape == (0, 64)
    with pytest.raises(UsageError, match="list of texts"):
        tiny_encoder.encode("a single string")
    with pytest.raises(UsageError, match="must be strings"):
        tiny_encoder.encode([b"bytes"])
