"""Training stages on the tiny model: masking, loss going down, exact resume, encoder output."""

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS, write_beir

from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import UsageError
from llm2vec_search.train import data as train_data
from llm2vec_search.train.common import export_encoder
from llm2vec_search.train.mntp import MNTPConfig, mask_tokens, mntp_loss, train_mntp
from llm2vec_search.train.simcse import SimCSEConfig, train_simcse
from llm2vec_search.train.supervised import SupervisedConfig, batch_views, train_supervised


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "passages.txt"
    # Templated sentences: context predicts the masked words, so the MNTP loss can fall.
    adj, animal, verb, place = ("red blue green small large".split(), "cat dog bird fish mouse".split(),
                                "runs sleeps eats jumps swims".split(), "house tree river mountain city".split())
    lines = [" ".join(f"the {rng.choice(adj)} {rng.choice(animal)} {rng.choice(verb)} in the {rng.choice(place)} ."
                      for _ in range(rng.randint(1, 4))) for _ in range(400)]
    path.write_text("\n".join(lines))
    return path


def test_masking_rate_labels_and_special_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128))
    ids[:, 5] = 1  # a special token column
    inputs, labels = mask_tokens(ids, mask_id=7, probability=0.2, policy="bert", special_ids={1},
                                 vocab_size=1000, generator=g)
    chosen = labels != -100
    assert abs(chosen[:, 1:].float().mean().item() * 127 / 126 - 0.2) < 0.01  # column 5 is never chosen
    assert not chosen[:, 0].any() and not chosen[:, 5].any()
    assert torch.equal(labels[chosen], ids[chosen])  # labels hold the original tokens
    masked = (inputs == 7) & chosen
    assert 0.75 < masked.sum() / chosen.sum() < 0.85  # 80% replaced by the mask token
    assert torch.equal(inputs[~chosen], ids[~chosen])
    inputs, labels = mask_tokens(ids, mask_id=7, probability=0.2, policy="all-mask", special_ids={1},
                                 vocab_size=1000, generator=g)
    assert (inputs[labels != -100] == 7).all()


def test_padding_is_never_masked():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (4, 16))
    attn = torch.ones_like(ids)
    attn[:, 10:] = 0
    _, labels = mask_tokens(ids, mask_id=7, probability=0.9, policy="bert", special_ids=set(), vocab_size=100,
                            generator=g, attention_mask=attn)
    assert (labels[:, 10:] == -100).all()


def test_mntp_loss_predicts_token_i_from_position_i_minus_1():
    hidden = torch.zeros(1, 4, 3)
    hidden[0, 1] = torch.tensor([0.0, 0.0, 10.0])  # state at position 1 strongly predicts token 2
    labels = torch.tensor([[-100, -100, 2, -100]])  # the token at position 2 was masked
    head = torch.nn.Linear(3, 3, bias=False)
    head.weight.data = torch.eye(3)
    assert mntp_loss(hidden, labels, head).item() < 1e-3
    labels = torch.tensor([[-100, 2, -100, -100]])  # would use position 0's (zero) state: uniform
    assert abs(mntp_loss(hidden, labels, head).item() - np.log(3)) < 1e-5


def _mntp_cfg(tiny_model_dir, text_file, out, steps):
    return MNTPConfig(model=str(tiny_model_dir), data=str(text_file), output=str(out), steps=steps, batch_size=4,
                      max_seq_length=32, lr=3e-3, warmup_steps=2, eval_blocks=8, eval_every=10, save_every=5,
                      keep_checkpoints=10, device="cpu", bf16=False, mask_probability=0.3)


def test_mntp_loss_decreases_and_resume_is_exact(tiny_model_dir, text_file, tmp_path):
    full = train_mntp(_mntp_cfg(tiny_model_dir, text_file, tmp_path / "full", 30), quiet=True)
    history = json.loads((tmp_path / "full" / "checkpoint-000030" / "trainer.json").read_text())["history"]
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert evals[-1] < evals[0]

    # Crash after 10 steps, resume to 30: the same loss curve and the same adapter.
    cfg = _mntp_cfg(tiny_model_dir, text_file, tmp_path / "part", 30)
    _interrupt_after(cfg, 10)
    resumed = train_mntp(cfg, resume=True, quiet=True)
    history2 = json.loads((tmp_path / "part" / "checkpoint-000030" / "trainer.json").read_text())["history"]
    assert [h["loss"] for h in history2] == pytest.approx(losses, abs=1e-4)
    a = load_encoder(str(full), dtype="fp32", device="cpu").encode(["the cat runs to the river"])
    b = load_encoder(str(resumed), dtype="fp32", device="cpu").encode(["the cat runs to the river"])
    np.testing.assert_allclose(a, b, atol=1e-5)


def _interrupt_after(cfg, steps):
    """Run ``cfg`` but stop (as a crash would) once checkpoint ``steps`` is written."""
    import llm2vec_search.train.common as common

    real = common.save_checkpoint

    def save_then_crash(run_dir, step, *args, **kw):
        path = real(run_dir, step, *args, **kw)
        if step >= steps:
            raise KeyboardInterrupt
        return path

    common.save_checkpoint = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train_mntp(cfg, quiet=True)
    finally:
        common.save_checkpoint = real


def test_resume_extends_a_finished_run_and_reads_checkpoints_of_the_older_format(tiny_model_dir, text_file, tmp_path):
    import dataclasses
    import shutil

    from llm2vec_search.models import resolve
    from llm2vec_search.train.common import file_fingerprint
    from llm2vec_search.train.loop import lr_lambda, run_fingerprints

    cfg = dataclasses.replace(_mntp_cfg(tiny_model_dir, text_file, tmp_path / "run", 6), save_every=3)
    train_mntp(cfg, quiet=True)
    state = lambda d: torch.load(d / "state.pt", weights_only=True)  # noqa: E731  (no arbitrary unpickling)
    history = lambda d: json.loads((d / "trainer.json").read_text())["history"]  # noqa: E731
    losses = [h["loss"] for h in history(tmp_path / "run" / "checkpoint-000006")]

    # A checkpoint as the older version wrote it: numpy's and Python's RNG tuples pickled, and a
    # fingerprint over the whole config. It resumes with the same options, and only with them.
    old = tmp_path / "old" / "checkpoint-000003"
    shutil.copytree(tmp_path / "run" / "checkpoint-000003", old)
    st = state(old)
    rng = st["rng"]
    st["rng"] = {"torch": rng["torch"], "python": (rng["python"]["version"], tuple(rng["python"]["internal"]),
                                                   rng["python"]["gauss_next"]),
                 "numpy": (rng["numpy"]["kind"], rng["numpy"]["keys"].numpy().astype(np.uint32), rng["numpy"]["pos"],
                           rng["numpy"]["has_gauss"], rng["numpy"]["cached_gaussian"])}
    torch.save(st, old / "state.pt")
    old_cfg = dataclasses.replace(cfg, output=str(tmp_path / "old"))
    legacy = run_fingerprints(old_cfg, [], [file_fingerprint(text_file), resolve(str(tiny_model_dir)).identity()])[1]
    trainer = json.loads((old / "trainer.json").read_text())
    del trainer["format"]
    (old / "trainer.json").write_text(json.dumps({**trainer, "fingerprint": legacy}))
    with pytest.raises(UsageError, match="older version for other options"):
        train_mntp(dataclasses.replace(old_cfg, steps=10), resume=True, quiet=True)
    train_mntp(old_cfg, resume=True, quiet=True)
    assert [h["loss"] for h in history(tmp_path / "old" / "checkpoint-000006")] == pytest.approx(losses, abs=1e-4)

    # --resume with more steps (and another --save-every) extends the finished run: the steps to
    # come follow the cosine of the new total.
    train_mntp(dataclasses.replace(cfg, steps=10, save_every=2), resume=True, quiet=True)
    extended = history(tmp_path / "run" / "checkpoint-000010")
    assert len(extended) == 10 and [h["loss"] for h in extended[:6]] == losses
    assert state(tmp_path / "run" / "checkpoint-000006")["optimizer"]["param_groups"][0]["lr"] == 0.0  # old end
    lr8 = state(tmp_path / "run" / "checkpoint-000008")["optimizer"]["param_groups"][0]["lr"]
    assert lr8 == pytest.approx(cfg.lr * lr_lambda(cfg.warmup_steps, 10)(8)) and lr8 > 0
    with pytest.raises(UsageError, match="at step 10, past --steps 8"):
        train_mntp(dataclasses.replace(cfg, steps=8), resume=True, quiet=True)
    with pytest.raises(UsageError, match="different run"):
        train_mntp(dataclasses.replace(cfg, steps=12, lr=1e-3), resume=True, quiet=True)


@pytest.mark.parametrize("option", ["save_every", "eval_every", "keep_checkpoints"])
def test_zero_periods_are_refused_in_the_config(option):
    with pytest.raises(UsageError, match=f"--{option.replace('_', '-')} must be at least 1, got 0"):
        MNTPConfig(data="x", **{option: 0})
    if option != "eval_every":
        with pytest.raises(UsageError, match="must be at least 1"):
            SupervisedConfig(model="x", **{option: 0})


def test_simcse_then_supervised_chain_and_reload(tiny_model_dir, text_file, tmp_path):
    simcse = train_simcse(SimCSEConfig(model=str(tiny_model_dir), data=str(text_file), output=str(tmp_path / "s"),
                                       steps=4, batch_size=8, mini_batch=3, max_length=32, device="cpu",
                                       bf16=False, save_every=2), quiet=True)
    manifest = json.loads((simcse / "manifest.json").read_text())
    assert manifest["adapters"] == ["simcse"] and manifest["recipe"]["simcse"]["steps"] == 4

    rng = random.Random(1)
    examples = tuple(train_data.Example(" ".join(rng.choices(WORDS, k=5)), " ".join(rng.choices(WORDS, k=12)),
                                        " ".join(rng.choices(WORDS, k=12))) for _ in range(40))
    sources = [train_data.Source("toy", examples, "search the index")]
    sup = train_supervised(SupervisedConfig(model=str(simcse), output=str(tmp_path / "sup"), steps=3,
                                            batch_size=8, mini_batch=4, max_length=48, device="cpu",
                                            bf16=False, save_every=3), sources, quiet=True)
    manifest = json.loads((sup / "manifest.json").read_text())
    assert manifest["adapters"] == ["simcse", "supervised"]
    cfg = json.loads((sup / "supervised" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "../simcse"  # readable by the official-layout loader

    # Saving and reloading gives identical embeddings, through the manifest and the adapter chain.
    texts = ["the dog eats food", "a protein in the cell"]
    via_manifest = load_encoder(str(sup), dtype="fp32", device="cpu").encode(texts)
    again = load_encoder(str(sup), dtype="fp32", device="cpu").encode(texts)
    np.testing.assert_array_equal(via_manifest, again)
    via_adapter = load_encoder(str(sup / "supervised"), dtype="fp32", device="cpu").encode(texts)
    np.testing.assert_allclose(via_manifest, via_adapter, atol=1e-5)
    base = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu").encode(texts)
    assert np.abs(base - via_manifest).max() > 1e-4  # the adapters changed something

    # Exported in fp16 (what ships): half the size, the same embeddings to fp16 precision.
    exported = export_encoder(sup, tmp_path / "exported")
    assert not list(exported.glob("checkpoint-*"))
    size = lambda d: (d / "supervised" / "adapter_model.safetensors").stat().st_size  # noqa: E731
    assert size(exported) < 0.6 * size(sup)
    np.testing.assert_allclose(load_encoder(str(exported), dtype="fp32", device="cpu").encode(texts),
                               via_manifest, atol=2e-3)

    # An incomplete encoder (an adapter swapped for a pruned checkpoint's) is refused with one line,
    # before anything is written: neither the destination nor a temporary folder is left.
    broken = tmp_path / "broken"
    shutil.copytree(sup, broken)
    (broken / "supervised" / "adapter_config.json").unlink()
    with pytest.raises(UsageError, match="lacks supervised/adapter_config.json"):
        export_encoder(broken, tmp_path / "out")
    with pytest.raises(UsageError, match="not an encoder directory"):
        export_encoder(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
    assert not [p.name for p in tmp_path.iterdir() if "out" in p.name]  # no temporary folder either


def test_batch_views_drop_false_negatives():
    ex = (train_data.Example("q1", "d1", "n1"), train_data.Example("q2", "d1", "n2"),
          train_data.Example("q3", "d3", "d1"), train_data.Example("q4", "d4", "n4"))
    batch = batch_views(train_data.Source("s", ex, "instr"), [0, 1, 2, 3])
    assert batch.views[0] == (["q1", "q4"], ["instr", "instr"])
    assert batch.views[1][0] == ["d1", "d4"] and batch.views[2][0] == ["n1", "n4"]
    assert batch.exclude is None  # no qrels: nothing to mask


def test_batch_views_mask_documents_judged_relevant_to_another_anchor():
    E = train_data.Example
    ex = (E("qa", "A1", "N1", "a", "a1", "n1"), E("qb", "B1", "N2", "b", "b1", "n2"),
          E("qc", "C1", "A1-other", "c", "c1", "a2"))
    judged = {"a": frozenset({"a1", "b1", "a2"}), "b": frozenset({"b1"}), "c": frozenset({"c1"})}
    batch = batch_views(train_data.Source("s", ex, None, judged), [0, 1, 2])
    # Candidates: positives a1 b1 c1, then negatives n1 n2 a2. Query a has b1 and a2 judged relevant.
    expected = torch.zeros(3, 6, dtype=torch.bool)
    expected[0, 1] = expected[0, 5] = True
    assert torch.equal(batch.exclude, expected)


def test_schedule_one_source_per_batch_and_deterministic():
    a = train_data.Source("a", tuple(train_data.Example(f"a{i}", f"A{i}") for i in range(50)))
    b = train_data.Source("b", tuple(train_data.Example(f"b{i}", f"B{i}") for i in range(10)))
    plan = train_data.schedule([a, b], steps=40, batch_size=8, seed=3)
    assert plan == train_data.schedule([a, b], steps=40, batch_size=8, seed=3)
    assert all(len(idx) == 8 and max(idx) < (50 if s == 0 else 10) for s, idx in plan)
    assert {s for s, _ in plan} == {0, 1}
    with pytest.raises(UsageError, match="larger than every training source"):
        train_data.schedule([b], steps=1, batch_size=16, seed=0)


def test_beir_pairs_with_bm25_and_encoder_negatives(tmp_path, tiny_model_dir):
    from llm2vec_search.search import SearchIndex

    folder = write_beir(tmp_path / "toy", n_docs=40, n_queries=8, extra_qrels=["q0\td5\t1", "q0\td6\t0"])
    (folder / "qrels" / "train.tsv").write_bytes((folder / "qrels" / "test.tsv").read_bytes())
    for negatives in ("bm25", "encoder"):
        src = train_data.load_beir(folder, negatives=negatives, negatives_model=str(tiny_model_dir),
                                   index_dir=tmp_path / "idx", instruction="find it", negative_depth=(2, 20))
        assert src.has_negatives and len(src.examples) == 9
        assert src.judged["q0"] == {"d0", "d5"}  # judged relevant (score > 0) only
        for e in src.examples:
            assert e.negative_id not in {"d0", "d5", "d6"} if e.query_id == "q0" else e.negative_id != e.positive_id
    # The encoder's negatives come from its ranks 2..20, over the corpus index eval caches.
    name = next((tmp_path / "idx").glob("eval-toy-*")).name
    idx = SearchIndex.open(name, tmp_path / "idx")
    for e in src.examples:
        ranked = [h.id for h in idx.search([e.query], 20, instruction="find it")[0]]
        assert e.negative_id in ranked[2:20]
    with pytest.raises(UsageError, match="negatives-model"):
        train_data.load_beir(folder, negatives="encoder")
    with pytest.raises(UsageError, match="unknown negatives"):
        train_data.load_beir(folder, negatives="random")


def test_warm_start_loads_the_adapter_and_refuses_another_shape(tiny_model_dir, tmp_path):
    from llm2vec_search.models import load_model_and_tokenizer, resolve
    from llm2vec_search.train.common import LoraConfig, add_lora, load_adapter_weights

    def fresh(cfg=LoraConfig()):
        return add_lora(load_model_and_tokenizer(resolve(str(tiny_model_dir)), device=torch.device("cpu"))[0], cfg)

    trained = fresh()
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_" in n:
                p.normal_()
    trained.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    warm = fresh()
    record = load_adapter_weights(warm, tmp_path / "adapter", LoraConfig())
    assert record["path"] == str(tmp_path / "adapter") and record["sha256"]
    got, want = dict(warm.named_parameters()), dict(trained.named_parameters())
    assert all(torch.equal(got[n], want[n]) for n in want if "lora_" in n)
    with pytest.raises(UsageError, match="differs from this run"):
        load_adapter_weights(fresh(LoraConfig(r=8)), tmp_path / "adapter", LoraConfig(r=8))
    with pytest.raises(UsageError, match="no adapter_model.safetensors"):
        load_adapter_weights(warm, tmp_path, LoraConfig())


def test_wrapping_and_merging_adapters_prints_no_warnings(tiny_model_dir, tmp_path):
    from llm2vec_search.models import load_model_and_tokenizer, merge_adapters, resolve
    from llm2vec_search.train.common import LoraConfig, add_lora

    def base():
        return load_model_and_tokenizer(resolve(str(tiny_model_dir)), device=torch.device("cpu"))[0]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(base(), LoraConfig()).save_pretrained(tmp_path / "adapter", safe_serialization=True)
        merge_adapters(base(), [tmp_path / "adapter"])
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_bad_inputs(tmp_path, tiny_model_dir, text_file):
    with pytest.raises(UsageError, match="not found"):
        list(train_data.load_jsonl(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: missing or empty 'positive'"):
        train_data.load_jsonl(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match="fewer than"):
        train_mntp(MNTPConfig(model=str(tiny_model_dir), data=str(empty), output=str(tmp_path / "o"), device="cpu"))
    with pytest.raises(UsageError, match="no checkpoint"):
        train_mntp(MNTPConfig(model=str(tiny_model_dir), data=str(text_file), output=str(tmp_path / "o2"),
                              device="cpu", max_seq_length=16, eval_blocks=4, batch_size=2), resume=True)
    with pytest.raises(UsageError, match="mask policy"):
        MNTPConfig(mask_policy="random")


def _recipe(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / f"recipes/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_split_holds_exactly_the_queries_training_held_out(tmp_path, capsys):
    from llm2vec_search.evaluate import load_beir

    folder = write_beir(tmp_path / "data" / "toy", n_docs=40, n_queries=12)
    (folder / "qrels" / "train.tsv").write_text((folder / "qrels" / "test.tsv").read_text() + "q10\td3\t1\n")
    trained = {e.query_id for e in train_data.load_beir(folder, holdout=3, negatives="none").examples}
    recipe = _recipe("validation_split")
    out = tmp_path / "val" / "toy"
    assert recipe.main([str(folder), str(out), "--holdout", "3"]) == 0
    queries, qrels, _ = load_beir(out, "val")
    assert set(queries) == {"q9", "q10", "q11"} and not set(queries) & trained  # numeric-aware: q9 < q10
    assert len(trained) == 9 and qrels["q10"] == {"d10": 1, "d3": 1}
    assert load_beir(out, "test")[1] == load_beir(folder, "test")[1]  # the other splits stay readable
    capsys.readouterr()
    for bad in ([str(folder), str(tmp_path / "renamed"), "--holdout", "3"], [str(folder), str(out), "--holdout", "12"],
                [str(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "--holdout", "1"]):
        assert recipe.main(bad) == 1
        assert capsys.readouterr().err.startswith("error: ")


def test_validation_split_sample_corpus_keeps_every_judged_document(tmp_path):
    from llm2vec_search.evaluate import load_beir

    folder = write_beir(tmp_path / "data" / "toy", n_docs=40, n_queries=12)
    (folder / "qrels" / "train.tsv").write_text((folder / "qrels" / "test.tsv").read_text())
    recipe = _recipe("validation_split")
    runs = []
    for out, seed in ((tmp_path / "a" / "toy", 1), (tmp_path / "b" / "toy", 1), (tmp_path / "c" / "toy", 2)):
        assert recipe.main([str(folder), str(out), "--holdout", "3", "--sample-corpus", "5", "--seed", str(seed)]) == 0
        assert not (out / "corpus.jsonl").is_symlink()
        _, qrels, _ = load_beir(out, "val")
        corpus = {json.loads(line)["_id"] for line in (out / "corpus.jsonl").read_text().splitlines()}
        judged = {d for rel in qrels.values() for d in rel}
        assert judged <= set(corpus) and len(corpus) == len(judged) + 5
        runs.append(set(corpus))
    assert runs[0] == runs[1] and runs[0] != runs[2]  # seeded


def test_keyword_pairs_query_a_rare_title_word_and_negatives_never_name_it(tmp_path, tiny_model_dir):
    from llm2vec_search.train.pairs import beir_title_pairs, words

    rng = random.Random(2)
    topics = "horse sheep tiger wolf deer rabbit mouse lion bear bird".split()  # each in 3 documents
    common = ["the", "of", "cell"]  # in every document: never a keyword
    docs = []
    for i in range(30):
        topic = topics[i % 10]
        title = " ".join([topic.capitalize(), *common, *rng.choices(["red", "blue", "fish"], k=2)])
        body = " ".join([*common, topic, *rng.choices(["is", "a"], k=30)])
        docs.append({"_id": f"d{i}", "title": title, "text": body})
    folder = tmp_path / "kw"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    rows = beir_title_pairs(folder, query="keyword", df=(2, 5), n=30, model=str(tiny_model_dir),
                            index_dir=tmp_path / "idx", depth=(0, 29), instruction="find it")
    assert len(rows) == 30
    for r in rows:
        assert r["query"] in topics and r["instruction"] == "find it"
        assert r["positive"].startswith(r["query"].capitalize() + " ") and f" {r['query']} " in r["positive"]
        assert r["query"] not in words(r["negative"])


def test_title_pairs_recipe_mines_bodies_never_the_document_itself(tmp_path, tiny_model_dir, capsys):
    title_pairs = _recipe("title_pairs")
    rng = random.Random(1)
    folder = tmp_path / "toy"
    folder.mkdir()
    docs = [{"_id": f"d{i}", "title": " ".join(rng.choices(WORDS, k=4)), "text": " ".join(rng.choices(WORDS, k=12))}
            for i in range(30)] + [{"_id": "short", "title": "a b c", "text": "too short"}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    out = tmp_path / "pairs.jsonl"
    args = [str(folder), str(out), "--n", "12", "--model", str(tiny_model_dir), "--index-dir", str(tmp_path / "idx"),
            "--depth", "1", "10", "--min-words", "5", "--instruction", "find it"]
    assert title_pairs.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    body = {d["title"]: d["text"] for d in docs}
    assert len(rows) == 12
    for r in rows:
        assert r["positive"] == body[r["query"]] and r["instruction"] == "find it"
        assert r["negative"] in body.values() and r["negative"] != r["positive"] and r["negative"] != "too short"
    (src,) = train_data.load_jsonl(out)
    assert src.has_negatives and src.instruction == "find it"
    later = tmp_path / "later.jsonl"  # a later round: the documents after the first run's 5
    assert title_pairs.main([str(folder), str(later), *args[2:], "--skip", "5"]) == 0
    later_titles = [json.loads(line)["query"] for line in later.read_text().splitlines()]
    assert later_titles == [r["query"] for r in rows][5:]
    capsys.readouterr()
    x = str(tmp_path / "x.jsonl")
    for bad in ([str(tmp_path / "missing"), x], [str(folder), x, "--n", "0"], [str(folder), x, "--skip", "1000"]):
        assert title_pairs.main(bad) == 1
        assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "x.jsonl").exists()
