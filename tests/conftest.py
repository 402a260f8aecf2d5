"""Shared fixtures: tiny random decoder models with a small word-level tokenizer, built offline.

Nothing here touches the network: ``HF_HUB_OFFLINE=1`` is set for the whole run, and the model
cache goes to a per-session temporary folder unless ``L2V_SEARCH_HOME`` is already set.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the a an of to in and is are was were be been for on with as by at from that this it its which "
    "cat dog bird fish mouse horse cow sheep lion tiger bear wolf fox deer rabbit "
    "runs sleeps eats jumps swims flies reads writes sees hears finds loses makes takes gives "
    "red blue green small large old new fast slow happy sad bright dark "
    "house tree river mountain city school book paper study protein cell gene virus vaccine immune "
    "disease patient treatment drug cancer risk blood heart brain water food energy climate "
    "result effect increase decrease level test data model method analysis evidence claim "
    "query document search index vector question answer science research"
).split()


def make_tokenizer(path: Path):
    """A word-level fast tokenizer with pad/eos/bos/unk tokens, saved at ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)) + [str(d) for d in range(10)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(True)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(path)
    return fast


def make_tiny_model(path: Path, model_type: str = "llama", seed: int = 0, **overrides) -> Path:
    """Save a tiny random decoder (2 layers, hidden 64) of ``model_type`` with the test tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(path)
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if model_type.startswith("gemma"):
        kw["head_dim"] = 16
    kw.update(overrides)
    config = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep tests from writing into the user's cache; reuse a real one if L2V_SEARCH_HOME is set."""
    if "L2V_SEARCH_HOME" not in os.environ:
        os.environ["L2V_SEARCH_HOME"] = str(tmp_path_factory.mktemp("l2v-home"))
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama saved as a Hugging Face directory (safetensors + tokenizer)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    """An fp32 bidirectional mean-pooling encoder on the tiny Llama (loaded once per session)."""
    from llm2vec_search.encoder import load_encoder

    return load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", max_length=128)


@pytest.fixture
def encoder_dir(tiny_model_dir, tmp_path, monkeypatch) -> Path:
    """A trained-encoder directory with two adapters on the tiny Llama, and a fresh model cache."""
    from test_models import _random_adapter

    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    enc = tmp_path / "enc"
    _random_adapter(tiny_model_dir, enc / "mntp", 1)
    _random_adapter(tiny_model_dir, enc / "simcse", 2)
    (enc / "manifest.json").write_text(json.dumps({"kind": "llm2vec-search.encoder", "base_model": str(tiny_model_dir),
                                                   "adapters": ["mntp", "simcse"]}))
    return enc


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``l2v-search ARGS`` in process: (exit code, stdout, stderr)."""
    from llm2vec_search.cli import main

    monkeypatch.setattr("sys.argv", ["l2v-search", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def word_index(home: Path, encoder, name: str = "docs", n_docs: int = 30, seed: int = 0, **build) -> Path:
    """Index ``n_docs`` documents of random words (a title word and 20 text words) as ``name``
    under ``home`` with ``encoder``; returns ``home``."""
    from llm2vec_search.index import build_index

    rng = random.Random(seed)
    corpus = home / f"{name}.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "title": rng.choice(WORDS),
                                            "text": " ".join(rng.choices(WORDS, k=20))}) for i in range(n_docs)))
    build_index(corpus, name, home, encoder=encoder, show_progress=False, **build)
    return home


def write_beir(folder, n_docs=40, n_queries=8, extra_qrels=(), queries_extra=()):
    rng = random.Random(0)
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(WORDS, k=12))} for i in range(n_docs)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    queries = [{"_id": f"q{i}", "text": docs[i]["text"][:30]} for i in range(n_queries)] + list(queries_extra)
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(n_queries)] + list(extra_qrels)
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder
