"""Word-level evaluation: linear probes on frozen word vectors (the LLM2Vec paper's POS and NER tasks).

    CoNLL file ─ sentences of words ─ encoder.encode_tokens (first sub-token, one layer) ─ cached Parquet
        train vectors + tags ─ logistic regression (scikit-learn) ─ test predictions ─ accuracy | entity F1

Word vectors are cached per encoder, layer, word pooling and sentence list under
``$L2V_SEARCH_HOME/word-vectors/<key>/`` in Parquet shards of 1,024 sentences, each written
atomically; an interrupted run keeps its finished shards, and probing the same vectors again
(another C, another task on the same sentences) encodes nothing. NER is scored at the entity
level by ``seqeval`` (CoNLL-2000 conlleval rules); POS by accuracy. Two baselines give the
numbers a floor: the majority tag, and each word form's most frequent training tag.

    from llm2vec_search.probe import evaluate_words
    result = evaluate_words("pos", model="llm2vec-smollm2-135m")   # result["score"]: accuracy
"""

from __future__ import annotations

import collections
import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .conll import TaggedSentence, read_conllu, read_iob2
from .errors import UsageError
from .manifest import fingerprint, library_versions, sha256_file, write_json_atomic, write_text_atomic
from .models import DEFAULT_ENCODER, home

DEFAULT_DATA = "../shared/data"
SHARD_SENTENCES = 1024
VECTORS_FORMAT = 1  # bump when what a cached word vector means changes (joining, alignment)


@dataclasses.dataclass(frozen=True)
class WordTask:
    name: str
    description: str
    train: str  # file under the data folder
    test: str
    reader: Callable[[Path], Any]
    metric: str  # "accuracy" (per word) or "f1" (per entity, seqeval)


TASKS = {t.name: t for t in (
    WordTask("pos", "UPOS tags of Universal Dependencies English EWT (train -> test)",
             "ud_ewt/en_ewt-ud-train.conllu.gz", "ud_ewt/en_ewt-ud-test.conllu.gz", read_conllu, "accuracy"),
    WordTask("ner", "Universal NER English EWT, IOB2 PER/LOC/ORG (dev -> test: no train file offline)",
             "uner_ewt/en_ewt-ud-dev.iob2", "uner_ewt/en_ewt-ud-test.iob2", read_iob2, "f1"),
)}


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    C: float = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's C)
    max_iter: int = 300  # lbfgs iterations; whether it converged is recorded
    standardize: bool = True  # scale features to zero mean, unit variance (train statistics) first
    seed: int = 0  # random_state (lbfgs itself is deterministic)

    def __post_init__(self):
        if self.C <= 0 or self.max_iter < 1:
            raise UsageError(f"probe C must be > 0 and max_iter >= 1, got C={self.C}, max_iter={self.max_iter}")


def task(name: str) -> WordTask:
    if name not in TASKS:
        raise UsageError(f"unknown word-level task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def _needs(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"word-level evaluation needs scikit-learn and seqeval: pip install "
                         f"'llm2vec-search[words]' (missing: {module.split('.')[0]})") from None


# -- word vectors, cached ------------------------------------------------------------------
def vectors_key(encoder, layer: int, word_pooling: str, sentences: Sequence[Sequence[str]]) -> str:
    """What the cached vectors depend on: the encoder, the layer, the pooling and the words."""
    from .tokens import resolve_layer

    return fingerprint([VECTORS_FORMAT, encoder.fingerprint, resolve_layer(encoder, layer), word_pooling,
                        fingerprint([list(s) for s in sentences])])


def word_vectors(
    encoder,
    sentences: Sequence[Sequence[str]],
    *,
    layer: int = -1,
    word_pooling: str = "first",
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One vector per word of ``sentences`` (float32, (total words, dim), in order), from the
    cache when there; returns the vectors and what was reused: ``{key, shards, reused_shards, ...}``."""
    import pyarrow.parquet as pq

    from .embed import EmbedProgress
    from .store import shard_is_done, shard_vectors, write_shard
    from .tokens import resolve_layer

    key = vectors_key(encoder, layer, word_pooling, sentences)
    folder = Path(cache_dir or home() / "word-vectors") / key
    n_shards = -(-len(sentences) // SHARD_SENTENCES)
    manifest = {"kind": "llm2vec-search.word-vectors", "encoder": encoder.identity(),
                "layer": resolve_layer(encoder, layer), "word_pooling": word_pooling, "sentences": len(sentences),
                "words": sum(len(s) for s in sentences), "joined_by": "single spaces", "format": VECTORS_FORMAT,
                "library_versions": library_versions()}
    if not (folder / "manifest.json").is_file():
        write_json_atomic(folder / "manifest.json", manifest)
    parts, reused, t0, tokens0 = [], 0, time.perf_counter(), encoder.stats.tokens
    todo = []
    for s in range(n_shards):
        path = folder / f"shard-{s:05d}.parquet"
        chunk = sentences[s * SHARD_SENTENCES : (s + 1) * SHARD_SENTENCES]
        if shard_is_done(path, key) and pq.read_metadata(path).num_rows == sum(len(x) for x in chunk):
            parts.append(shard_vectors(pq.read_table(path, columns=["vector"])))
            reused += 1
        else:
            parts.append(None)
            todo.append(s)
    with EmbedProgress(sum(len(sentences[s * SHARD_SENTENCES : (s + 1) * SHARD_SENTENCES]) for s in todo),
                       show_progress) as bar:
        for s in todo:
            chunk = sentences[s * SHARD_SENTENCES : (s + 1) * SHARD_SENTENCES]
            states = encoder.encode_tokens([list(x) for x in chunk], layer=layer, word_pooling=word_pooling,
                                           progress=bar.advance)
            vectors = np.concatenate([st.vectors for st in states]) if states else np.zeros((0, encoder.dim))
            sent = np.repeat(np.arange(s * SHARD_SENTENCES, s * SHARD_SENTENCES + len(chunk)),
                             [len(x) for x in chunk])
            word = np.concatenate([np.arange(len(x)) for x in chunk])
            table = pa.Table.from_arrays(
                [pa.array(sent, pa.int32()), pa.array(word, pa.int32()),
                 pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), encoder.dim)],
                names=["sentence", "word", "vector"])
            write_shard(table, folder / f"shard-{s:05d}.parquet", key)
            parts[s] = vectors.astype(np.float32, copy=False)
    x = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)
    return x, {"key": key, "folder": str(folder), "shards": n_shards, "reused_shards": reused,
               "seconds": round(time.perf_counter() - t0, 2), "tokens": encoder.stats.tokens - tokens0}


# -- probes and baselines -----------------------------------------------------------------
def fit_probe(x: np.ndarray, y: Sequence[str], cfg: ProbeConfig = ProbeConfig()):
    """A logistic-regression probe (scikit-learn, lbfgs, multinomial) on frozen vectors ``x`` (N, dim)."""
    linear_model = _needs("sklearn.linear_model")
    pipeline = _needs("sklearn.pipeline")
    preprocessing = _needs("sklearn.preprocessing")
    exceptions = _needs("sklearn.exceptions")

    steps = [preprocessing.StandardScaler()] if cfg.standardize else []
    clf = linear_model.LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed)
    model = pipeline.make_pipeline(*steps, clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)  # recorded as "converged" instead
        model.fit(x, np.asarray(y))
    return model


def probe_info(model, cfg: ProbeConfig) -> dict[str, Any]:
    clf = model[-1]
    n_iter = int(np.max(clf.n_iter_))
    return {"kind": "logistic regression (multinomial, lbfgs, L2)", "library": "scikit-learn",
            **dataclasses.asdict(cfg), "n_iter": n_iter, "converged": n_iter < cfg.max_iter,
            "classes": [str(c) for c in clf.classes_]}


def majority_tags(train: Sequence[TaggedSentence], test: Sequence[TaggedSentence]) -> list[list[str]]:
    """Every test word gets the most frequent training tag."""
    top = collections.Counter(t for s in train for t in s.tags).most_common(1)[0][0]
    return [[top] * len(s.words) for s in test]


def word_identity_tags(train: Sequence[TaggedSentence], test: Sequence[TaggedSentence]) -> list[list[str]]:
    """Each test word gets its form's most frequent training tag (unseen forms: the majority tag)."""
    per_word: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for s in train:
        for w, t in zip(s.words, s.tags):
            per_word[w][t] += 1
    best = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
    top = collections.Counter(t for s in train for t in s.tags).most_common(1)[0][0]
    return [[best.get(w, top) for w in s.words] for s in test]


def score_tags(metric: str, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``accuracy`` per word, or entity-level ``f1`` (with precision, recall and per type) by seqeval."""
    if metric == "accuracy":
        g = np.array([t for s in gold for t in s])
        p = np.array([t for s in pred for t in s])
        per_tag = {str(t): {"accuracy": float(np.mean(p[g == t] == t)), "support": int(np.sum(g == t))}
                   for t in sorted(set(g))}
        return {"accuracy": float(np.mean(g == p)), "per_tag": per_tag}
    metrics = _needs("seqeval.metrics")
    gold, pred = [list(s) for s in gold], [list(s) for s in pred]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when a baseline predicts no entity at all
        report = metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
        return {"f1": float(metrics.f1_score(gold, pred, zero_division=0)),
                "precision": float(metrics.precision_score(gold, pred, zero_division=0)),
                "recall": float(metrics.recall_score(gold, pred, zero_division=0)),
                "per_tag": {k: {m: float(v) for m, v in d.items()} for k, d in report.items() if "avg" not in k}}


def _split(path: Path, reader) -> tuple[list[TaggedSentence], dict[str, Any]]:
    sentences = list(reader(path))
    if not sentences:
        raise UsageError(f"{path}: no sentences")
    return sentences, {"path": str(path.resolve()), "sha256": sha256_file(path)[:16], "sentences": len(sentences),
                       "words": sum(len(s.words) for s in sentences)}


def evaluate_words(
    task_name: str,
    *,
    model: str = DEFAULT_ENCODER,
    encoder=None,
    encoder_overrides: dict[str, Any] | None = None,
    data: str | Path = DEFAULT_DATA,
    train: str | Path | None = None,
    test: str | Path | None = None,
    layer: int = -1,
    word_pooling: str = "first",
    probe: ProbeConfig = ProbeConfig(),
    cache_dir: str | Path | None = None,
    out: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train a linear probe on the train split's frozen word vectors and score it on the test split.

    ``task_name`` is a key of :data:`TASKS`; ``train``/``test`` replace its files (else they are
    found under ``data``). Pass ``encoder`` to reuse a loaded one. Returns the run record:
    ``result["score"]`` is the task's metric (POS accuracy, NER entity F1), ``result["baselines"]``
    the majority-tag and word-identity scores. With ``out``, writes ``scores.json``,
    ``manifest.json`` and ``predictions.tsv`` there.
    """
    from .tokens import resolve_layer

    t = task(task_name)
    for m in ("sklearn", "seqeval"):
        _needs(m)
    paths = {}
    for split, given, default in (("train", train, t.train), ("test", test, t.test)):
        p = Path(given) if given is not None else Path(data) / default
        if not p.is_file():
            hint = "" if given is not None else f" (pass --data DIR holding {default}, or --{split} FILE)"
            raise UsageError(f"{p}: no such file{hint}")
        paths[split] = p
    t0 = time.perf_counter()
    train_s, train_info = _split(paths["train"], t.reader)
    test_s, test_info = _split(paths["test"], t.reader)
    if encoder is None:
        from .encoder import load_encoder

        encoder = load_encoder(model, **(encoder_overrides or {}))
    resolved = resolve_layer(encoder, layer)
    t_load = time.perf_counter() - t0
    x_train, cache_train = word_vectors(encoder, [s.words for s in train_s], layer=layer, word_pooling=word_pooling,
                                        cache_dir=cache_dir, show_progress=show_progress)
    x_test, cache_test = word_vectors(encoder, [s.words for s in test_s], layer=layer, word_pooling=word_pooling,
                                      cache_dir=cache_dir, show_progress=show_progress)
    t_vectors = time.perf_counter() - t0 - t_load
    y_train = [tag for s in train_s for tag in s.tags]
    t1 = time.perf_counter()
    clf = fit_probe(x_train, y_train, probe)
    flat = clf.predict(x_test)
    t_probe = time.perf_counter() - t1
    pred, i = [], 0
    for s in test_s:
        pred.append([str(x) for x in flat[i : i + len(s.words)]])
        i += len(s.words)
    gold = [list(s.tags) for s in test_s]
    scores = score_tags(t.metric, gold, pred)
    per_tag = scores.pop("per_tag")
    baselines = {name: score_tags(t.metric, gold, fn(train_s, test_s))[t.metric]
                 for name, fn in (("majority", majority_tags), ("word_identity", word_identity_tags))}
    result = {
        "task": t.name,
        "description": t.description,
        "metric": t.metric,
        "score": scores[t.metric],
        "scores": scores,
        "baselines": baselines,
        "encoder": encoder.identity(),
        "layer": resolved,
        "layers": int(encoder.model.config.get_text_config().num_hidden_layers),
        "word_pooling": word_pooling,
        "data": {"train": {**train_info, "tags": len(set(y_train))}, "test": test_info},
        "probe": probe_info(clf, probe),
        "vectors": {"train": cache_train, "test": cache_test, "windowed_texts": encoder.stats.windowed},
        "timings": {"load_seconds": round(t_load, 2), "vectors_seconds": round(t_vectors, 2),
                    "probe_seconds": round(t_probe, 2), "total_seconds": round(time.perf_counter() - t0, 2)},
        "library_versions": library_versions("scikit-learn", "seqeval"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is not None:
        out = Path(out)
        (out / "manifest.json").unlink(missing_ok=True)  # gone while the run's files are rewritten
        write_json_atomic(out / "scores.json", {k: result[k] for k in ("task", "metric", "score", "scores",
                                                                       "baselines")} | {"per_tag": per_tag})
        lines = ["sentence\tword\tform\tgold\tpredicted"] + [
            f"{si}\t{wi}\t{w}\t{g}\t{p}" for si, s in enumerate(test_s)
            for wi, (w, g, p) in enumerate(zip(s.words, s.tags, pred[si]))]
        write_text_atomic(out / "predictions.tsv", "\n".join(lines) + "\n")
        write_json_atomic(out / "manifest.json", result)  # last: its presence marks a complete run
    return {**result, "per_tag": per_tag}
