"""Word-level representations and probes: token spans, word alignment, windows, causal parity,
the CoNLL readers, the probe on a synthetic task (and its shuffled-label control), the cache."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS, run_cli

from llm2vec_search.conll import read_conllu, read_iob2
from llm2vec_search.encoder import Encoder, EncoderConfig, load_encoder
from llm2vec_search.errors import UsageError
from llm2vec_search.tokens import align_words, join_words, owner_windows, windows

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CORPUS = ["the cat sleeps in the old house", "a naïve café owner reads the paper", "unbelievably fast foxes jump",
          "Tokyo 東京 is large 😀", "don't stop, believe it!"] * 20


def _save_tiny_llama(path: Path, tok) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bpe_encoder(tmp_path_factory):
    """A tiny Llama with a byte-level BPE of 300 tokens (SmolLM2's kind): most words split in pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")
    path = _save_tiny_llama(tmp_path_factory.mktemp("bpe-llama"), fast)
    return load_encoder(str(path), dtype="fp32", device="cpu", max_length=128)


# -- token spans and word alignment --------------------------------------------------------------
TEXT = "Unbelievably, the naïve café-goers in 東京 don't stop 😀!"


def test_token_spans_cover_the_text_and_map_back_to_its_characters(bpe_encoder):
    [s] = bpe_encoder.encode_tokens([TEXT])
    ids = bpe_encoder.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert s.tokens == bpe_encoder.tokenizer.convert_ids_to_tokens(ids)
    assert s.vectors.shape == (len(ids), 64) and s.vectors.dtype == np.float32
    assert len(s.tokens) > len(TEXT.split()) + 5  # words really split into several tokens
    assert all(0 <= a < b <= len(TEXT) for a, b in s.spans)
    assert [a for a, _ in s.spans] == sorted(a for a, _ in s.spans)
    covered = {i for a, b in s.spans for i in range(a, b)}
    assert {i for i, ch in enumerate(TEXT) if not ch.isspace()} <= covered
    # Each token's bytes, in order, are the text's bytes; its span is exactly the characters they fall in.
    decode = _byte_decoder()
    token_bytes = [bytes(decode[c] for c in t) for t in s.tokens]
    assert b"".join(token_bytes) == TEXT.encode()
    char_of_byte = [i for i, ch in enumerate(TEXT) for _ in ch.encode()]
    pos = 0
    for tb, span in zip(token_bytes, s.spans):
        assert span == (char_of_byte[pos], char_of_byte[pos + len(tb) - 1] + 1)
        pos += len(tb)
    assert any(len(TEXT[a:b].encode()) > 1 and TEXT[a:b] == TEXT[c:d]  # a character split in two tokens
               for (a, b), (c, d) in zip(s.spans, s.spans[1:]))


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character that stands for each byte -> the byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def test_words_align_to_their_tokens_from_the_offsets(bpe_encoder):
    words = ["Unbelievably", ",", "the", "naïve", "café-goers", "in", "東京", "don't", "stop", "😀", "!"]
    first, mean = (bpe_encoder.encode_tokens([words], word_pooling=p)[0] for p in ("first", "mean"))
    text, spans = join_words(words)
    [tokens] = bpe_encoder.encode_tokens([text])  # the same text, token by token
    assert first.text == text and first.tokens == words and first.spans == spans
    assert [text[a:b] for a, b in first.spans] == words
    assert first.vectors.shape == (len(words), 64)
    assert max(len(a) for a in first.alignment) >= 3  # some word split into 3+ tokens
    for w, (ws, we) in enumerate(spans):
        toks = first.alignment[w]
        assert toks == sorted(toks) and toks == list(range(toks[0], toks[-1] + 1))
        assert {i for t in toks for i in range(*tokens.spans[t])} >= set(range(ws, we))  # the whole word
        assert all(tokens.spans[t][1] > ws and tokens.spans[t][0] < we for t in toks)  # nothing else
        np.testing.assert_allclose(first.vectors[w], tokens.vectors[toks[0]], atol=1e-6)
        np.testing.assert_allclose(mean.vectors[w], tokens.vectors[toks].mean(0), atol=1e-6)


def test_align_words_edge_cases():
    # Leading-space tokens (byte-level BPE), a space-only token, one token spanning two words.
    assert align_words([(0, 3), (4, 7)], [(0, 3), (3, 7)]) == [[0], [1]]
    assert align_words([(0, 3), (4, 7)], [(0, 3), (3, 4), (4, 7)]) == [[0], [2]]
    assert align_words([(0, 1), (2, 3)], [(0, 3)]) == [[0], [0]]
    assert align_words([(0, 2)], [(0, 0), (0, 1), (1, 2)]) == [[1, 2]]  # empty spans (specials) ignored


def test_word_level_tokenizer_punctuation(tiny_encoder):
    [s] = tiny_encoder.encode_tokens([["the", "cat", ",", "sleeps", "."]])
    assert s.alignment == [[0], [1], [2], [3], [4]]
    [t] = tiny_encoder.encode_tokens(["the cat , sleeps ."])
    np.testing.assert_allclose(s.vectors, t.vectors, atol=1e-6)


def test_bad_inputs(tiny_encoder):
    with pytest.raises(UsageError, match="list of texts"):
        tiny_encoder.encode_tokens("the cat")
    with pytest.raises(UsageError, match="empty or whitespace"):
        tiny_encoder.encode_tokens([["the", " "]])
    with pytest.raises(UsageError, match="word pooling"):
        tiny_encoder.encode_tokens(["the cat"], word_pooling="max")
    with pytest.raises(UsageError, match="hidden states 0 .* to 2"):
        tiny_encoder.encode_tokens(["the cat"], layer=3)
    assert tiny_encoder.encode_tokens([]) == []
    [empty] = tiny_encoder.encode_tokens([""])
    assert empty.vectors.shape == (0, 64) and empty.tokens == []


# -- which states: causal parity, layers, instructions, windows ----------------------------------
def test_causal_token_states_equal_a_plain_causal_forward(tiny_model_dir):
    from transformers import AutoModel

    text = "the old cat sleeps in the house by the river"
    enc = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", causal=True)
    plain = AutoModel.from_pretrained(tiny_model_dir).eval()  # causal, as shipped
    ids = torch.tensor([enc.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = plain(input_ids=ids, output_hidden_states=True)
    for layer, expected in ((-1, out.last_hidden_state), (1, out.hidden_states[1]), (0, out.hidden_states[0])):
        [s] = enc.encode_tokens([text], layer=layer)
        np.testing.assert_allclose(s.vectors, expected[0].numpy(), atol=1e-5)
    bidir = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu").encode_tokens([text])[0]
    assert not np.allclose(bidir.vectors[0], out.last_hidden_state[0, 0].numpy(), atol=1e-3)


def test_instruction_is_attended_but_returns_no_vectors(tiny_model_dir):
    enc = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", causal=True)
    plain = enc.encode_tokens(["the cat sleeps"])[0]
    instructed = enc.encode_tokens(["the cat sleeps"], instruction="find a dog")[0]
    assert instructed.tokens == plain.tokens and instructed.vectors.shape == plain.vectors.shape
    assert not np.allclose(instructed.vectors, plain.vectors, atol=1e-4)


def test_windows_overlap_by_half_and_each_token_has_one_owner():
    assert windows(3, 8) == [(0, 3)] and windows(0, 8) == []
    wins = windows(10, 4)
    assert wins == [(0, 4), (2, 6), (4, 8), (6, 10)]
    owner = owner_windows(10, wins, causal=False)
    assert owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]  # the window where it is most central
    assert owner_windows(10, wins, causal=True).tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]


def test_long_texts_are_windowed_not_cut(tiny_model_dir, caplog):
    text = " ".join(random.Random(0).choices(WORDS, k=60))
    full = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", causal=True).encode_tokens([text])[0]
    short = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", causal=True, max_length=16)
    with caplog.at_level("WARNING"):
        [s] = short.encode_tokens([text, "the cat"])[:1]
    assert s.tokens == full.tokens and s.vectors.shape == full.vectors.shape and s.windows > 1
    assert short.stats.windowed == 1 and short.stats.truncated == 0
    assert "overlapping windows" in caplog.text
    np.testing.assert_allclose(s.vectors[:16], full.vectors[:16], atol=1e-5)  # the first window: same left context
    assert np.all(np.abs(s.vectors).sum(1) > 0)  # every token got a vector


def test_an_encoder_only_model_works_too(tmp_path):
    """all-MiniLM-L6-v2's kind (BERT, WordPiece, [CLS] ... [SEP]): the specials return no vectors."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sleep", "##s", ",", "!"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()
    enc = Encoder(bert, fast, EncoderConfig(max_length=32))
    [s] = enc.encode_tokens([["The", "cat", "sleeps", "!"]])
    assert s.alignment == [[0], [1], [2, 3], [4]] and s.vectors.shape == (4, 32)
    ids = torch.tensor([fast("The cat sleeps !")["input_ids"]])
    assert ids[0, 0] == 2 and ids[0, -1] == 3
    with torch.no_grad():
        expected = bert(input_ids=ids).last_hidden_state[0, 1:-1]  # without [CLS] and [SEP]
    np.testing.assert_allclose(s.vectors, expected[[0, 1, 2, 4]].numpy(), atol=1e-5)


# -- CoNLL readers --------------------------------------------------------------------------------
CONLLU = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4.1\tknows\tknow\tVERB\tVB\t_\t_\t_\t0:root\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""

IOB2 = """# sent_id = a
# text = Tampa Bay is nice
1\tTampa\tB-LOC\t-\tstephen
2\tBay\tI-LOC\t-\tstephen
3\tis\tO\t-\t-
4\tnice\tO\t-\t-

Anna\tB-PER
sleeps\tO
"""


def test_conllu_reader_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "x.conllu.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(CONLLU)
    s1, s2 = read_conllu(path)
    assert s1.words == ("I", "do", "n't", "know", ".") and s1.tags == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert s1.sent_id == "s1" and s1.line == 4
    assert s2.words == ("Hi",) and s2.tags == ("INTJ",) and s2.line == 13
    assert [s.tags for s in read_conllu(path, column="xpos")][1] == ("UH",)


def test_iob2_reader(tmp_path):
    path = tmp_path / "x.iob2"
    path.write_text(IOB2)
    a, b = read_iob2(path)
    assert a.words == ("Tampa", "Bay", "is", "nice") and a.tags == ("B-LOC", "I-LOC", "O", "O")
    assert b.words == ("Anna", "sleeps") and b.tags == ("B-PER", "O")


@pytest.mark.parametrize("reader, text, line, message", [
    (read_conllu, "1\tI\tI\tPRON\n", 1, "expected 10 tab-separated columns, got 4"),
    (read_conllu, "# c\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tam\tbe\t_\tVBP\t_\t1\tcop\t_\t_\n", 3, "no UPOS tag"),
    (read_conllu, "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n3\tam\tbe\tAUX\tVBP\t_\t1\tcop\t_\t_\n", 2, "follows 1"),
    (read_conllu, "x\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", 1, "bad word id"),
    (read_iob2, "1\tTampa\tB-LOC\n2\tBay\n", 2, "tag 'Bay' is not IOB2"),
    (read_iob2, "Tampa\n", 1, "expected tab-separated WORD and TAG"),
    (read_iob2, "1\tTampa\tLOC\n", 1, "tag 'LOC' is not IOB2"),
])
def test_bad_conll_lines_name_file_and_line(tmp_path, reader, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as e:
        list(reader(path))
    assert str(e.value).startswith(f"{path}:{line}: ")


# -- the probe, end to end through the CLI --------------------------------------------------------
ANIMALS = "cat dog bird fish mouse horse cow sheep lion tiger bear wolf fox deer rabbit".split()
CLASSES = {"DET": ["the", "a", "an", "this"], "NOUN": ANIMALS,
           "VERB": "runs sleeps eats jumps swims flies reads writes sees hears".split(),
           "ADJ": "red blue green small large old new fast slow happy".split()}


def _write_conllu(path: Path, n: int, seed: int, shuffle: bool = False) -> None:
    rng = random.Random(seed)
    tag_of = {w: t for t, ws in CLASSES.items() for w in ws}
    vocab = sorted(tag_of)
    sents = [rng.choices(vocab, k=rng.randint(3, 9)) for _ in range(n)]
    tags = [[tag_of[w] for w in s] for s in sents]
    if shuffle:  # the control: the same tag counts, but no longer determined by the word
        flat = [t for ts in tags for t in ts]
        rng.shuffle(flat)
        it = iter(flat)
        tags = [[next(it) for _ in s] for s in sents]
    lines = []
    for s, ts in zip(sents, tags):
        lines += [f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_" for i, (w, t) in enumerate(zip(s, ts), 1)] + [""]
    path.write_text("\n".join(lines))


def words_cli(monkeypatch, capsys, model, *args):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "words", *args, "--model", str(model), "--dtype", "fp32",
                             "--device", "cpu", "--json")
    assert code == 0, err
    return json.loads(out)


def test_probe_learns_a_word_determined_task_and_not_shuffled_labels(monkeypatch, capsys, tmp_path, tiny_model_dir):
    monkeypatch.setattr("llm2vec_search.probe.SHARD_SENTENCES", 64)
    _write_conllu(tmp_path / "train.conllu", 300, seed=1)
    _write_conllu(tmp_path / "shuffled.conllu", 300, seed=1, shuffle=True)
    _write_conllu(tmp_path / "test.conllu", 100, seed=2)
    common = ("--test", str(tmp_path / "test.conllu"), "--cache-dir", str(tmp_path / "cache"))
    r = words_cli(monkeypatch, capsys, tiny_model_dir, "pos", "--train", str(tmp_path / "train.conllu"), *common,
                  "--out", str(tmp_path / "run"))
    assert r["task"] == "pos" and r["metric"] == "accuracy"
    assert r["score"] >= 0.99
    assert r["baselines"]["word_identity"] == 1.0 and 0.2 < r["baselines"]["majority"] < 0.45
    assert r["layer"] == 2 and r["layers"] == 2 and r["word_pooling"] == "first"
    assert r["data"]["train"]["sentences"] == 300 and r["data"]["train"]["tags"] == 4
    assert r["probe"]["library"] == "scikit-learn" and r["probe"]["seed"] == 0 and r["probe"]["converged"]
    assert {"scikit-learn", "torch", "transformers"} <= set(r["library_versions"])
    assert r["vectors"]["train"]["reused_shards"] == 0 and r["vectors"]["train"]["shards"] == 5
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"scores.json", "manifest.json", "predictions.tsv"}
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["score"] == r["score"]

    control = words_cli(monkeypatch, capsys, tiny_model_dir, "pos", "--train", str(tmp_path / "shuffled.conllu"),
                        *common)
    assert control["vectors"]["train"]["reused_shards"] == 5  # the same sentences: vectors from the cache
    assert control["score"] < r["baselines"]["majority"] + 0.1  # chance, not the task


def test_word_vector_cache_resumes_and_equals_a_fresh_run(tmp_path, tiny_encoder, monkeypatch):
    from llm2vec_search.probe import word_vectors

    monkeypatch.setattr("llm2vec_search.probe.SHARD_SENTENCES", 4)
    rng = random.Random(0)
    sents = [rng.choices(WORDS, k=rng.randint(1, 8)) for _ in range(10)]
    x, info = word_vectors(tiny_encoder, sents, cache_dir=tmp_path)
    assert x.shape == (sum(map(len, sents)), 64) and info["shards"] == 3 and info["reused_shards"] == 0
    (Path(info["folder"]) / "shard-00001.parquet").unlink()  # as if the run had stopped there
    again, info2 = word_vectors(tiny_encoder, sents, cache_dir=tmp_path)
    assert info2["reused_shards"] == 2 and info2["key"] == info["key"]
    np.testing.assert_array_equal(again, x)
    other, info3 = word_vectors(tiny_encoder, sents, layer=1, cache_dir=tmp_path)
    assert info3["key"] != info["key"] and not np.allclose(other, x)


def test_ner_probe_scores_entities_with_seqeval(monkeypatch, capsys, tmp_path, tiny_model_dir):
    rng = random.Random(0)
    places = ["house", "tree", "river", "city"]
    vocab = [w for ws in CLASSES.values() for w in ws] + places  # fewer word types than dimensions (64)

    def write(path, n):
        lines = []
        for _ in range(n):
            words = rng.choices(vocab, k=rng.randint(3, 8))
            for i, w in enumerate(words, 1):  # animals are people, places are locations
                tag = "B-PER" if w in ANIMALS else "B-LOC" if w in places else "O"
                lines.append(f"{i}\t{w}\t{tag}\t-\t-")
            lines.append("")
        path.write_text("\n".join(lines))

    write(tmp_path / "dev.iob2", 200)
    write(tmp_path / "test.iob2", 60)
    r = words_cli(monkeypatch, capsys, tiny_model_dir, "ner", "--train", str(tmp_path / "dev.iob2"), "--test",
                  str(tmp_path / "test.iob2"), "--cache-dir", str(tmp_path / "cache"), "--C", "10",
                  "--word-pooling", "mean")
    assert r["metric"] == "f1" and r["score"] >= 0.98
    assert r["probe"]["C"] == 10 and r["word_pooling"] == "mean"
    assert set(r["scores"]) == {"f1", "precision", "recall"} and set(r["per_tag"]) == {"PER", "LOC"}
    assert r["baselines"]["majority"] == 0.0  # all O: no entity found


def test_eval_words_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "eval", "words")
    assert code == 2 and "valid tasks: pos, ner" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "words", "chunking")
    assert code == 2 and "unknown word-level task 'chunking'; valid tasks: pos, ner" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "words", "pos", "--data", str(tmp_path))
    assert code == 2 and "en_ewt-ud-train.conllu.gz: no such file (pass --data DIR" in err
    (tmp_path / "bad.conllu").write_text("1\tI\tI\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval", "words", "pos", "--train", str(tmp_path / "bad.conllu"),
                           "--test", str(tmp_path / "bad.conllu"))
    assert code == 2 and f"{tmp_path / 'bad.conllu'}:1: expected 10 tab-separated columns" in err
    assert len(err.strip().splitlines()) == 1


# -- encode --tokens ------------------------------------------------------------------------------
def test_encode_tokens_cli(monkeypatch, capsys, tiny_model_dir, tiny_encoder):
    texts = ["the cat sleeps", "a dog"]
    code, out, err = run_cli(monkeypatch, capsys, "encode", *texts, "--tokens", "--layer", "1", "--model",
                             str(tiny_model_dir), "--dtype", "fp32", "--max-length", "128", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["layer"] == 1 and r["dim"] == 64 and len(r["texts"]) == 2
    expected = tiny_encoder.encode_tokens(texts, layer=1)
    for got, exp, text in zip(r["texts"], expected, texts):
        assert set(got) == {"text", "tokens", "spans", "embeddings"} and got["text"] == text
        assert got["tokens"] == exp.tokens == [text[a:b] for a, b in got["spans"]]  # word-level pieces
        np.testing.assert_allclose(np.array(got["embeddings"]), exp.vectors, atol=1e-6)
    code, out, _ = run_cli(monkeypatch, capsys, "encode", "the [cat]", "--tokens", "--model", str(tiny_model_dir))
    assert code == 0 and "'['" in out and "']'" in out  # printed literally, not taken for rich markup
    code, _, err = run_cli(monkeypatch, capsys, "encode", "the cat", "--layer", "1", "--model", str(tiny_model_dir))
    assert code == 2 and "--layer applies to --tokens only" in err
    code, _, err = run_cli(monkeypatch, capsys, "encode", "the cat", "--tokens", "--pooling", "eos")
    assert code == 2 and "do not apply to --tokens" in err
