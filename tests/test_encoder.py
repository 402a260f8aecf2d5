"""Batching and truncation (pooling and instructions: test_pooling.py)."""

import numpy as np
import pytest

from llm2vec_search.encoder import plan_batches
from llm2vec_search.errors import UsageError


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


def test_truncation_keeps_the_first_tokens_and_counts_instructions(tiny_encoder):
    budget = tiny_encoder.text_budget("find the cat")
    assert budget == 128 - 3
    long = " ".join(["cat", "dog"] * 100)
    before = tiny_encoder.stats.truncated
    cut = tiny_encoder.encode([long], "find the cat")
    assert tiny_encoder.stats.truncated == before + 1
    first = " ".join(long.split()[:budget])
    np.testing.assert_allclose(cut, tiny_encoder.encode([first], "find the cat"), atol=1e-5)
    assert tiny_encoder.stats.truncated == before + 1  # exactly at the budget: not truncated


def test_bf16_choice_is_measured_once_per_machine(monkeypatch, tmp_path):
    """AVX-512 bf16 without AMX ran bf16 matmuls at 0.55x of fp32 here: the flag alone must not pick bf16."""
    import torch

    from llm2vec_search import devices as E

    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path))
    calls = []

    def rate(dtype, reps=6):
        calls.append(dtype)
        return 1.0 if dtype == torch.bfloat16 else 2.0  # bf16 measured at half the fp32 rate

    monkeypatch.setattr(E, "_matmul_rate", rate)
    monkeypatch.setattr(E, "_cpu_flags", lambda: ["avx512f", "avx512_bf16"])
    E.cpu_has_fast_bf16.cache_clear()
    assert E.cpu_has_fast_bf16() is False and len(calls) == 2
    E.cpu_has_fast_bf16.cache_clear()
    assert E.cpu_has_fast_bf16() is False and len(calls) == 2  # the second process reads cpu.json
    monkeypatch.setattr(E, "_cpu_flags", lambda: ["avx512f", "amx_bf16", "avx512_bf16"])
    monkeypatch.setattr(E, "_matmul_rate", lambda dtype, reps=6: 4.0 if dtype == torch.bfloat16 else 1.0)
    E.cpu_has_fast_bf16.cache_clear()
    assert E.cpu_has_fast_bf16() is True  # other flags: another machine, measured anew
    monkeypatch.setattr(E, "_cpu_flags", lambda: ["avx2"])
    E.cpu_has_fast_bf16.cache_clear()
    assert E.cpu_has_fast_bf16() is False  # no bf16 instructions: never measured
    E.cpu_has_fast_bf16.cache_clear()
