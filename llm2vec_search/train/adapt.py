"""``train adapt``: unsupervised adaptation of an encoder to a user's own corpus.

No queries or judgments: pseudo-queries made from the corpus itself (:mod:`.pairs`: titles,
rare title keywords, sentences, crops), hard negatives mined by the input encoder over the
corpus's passages (ranks ``depth``, never the positive's document nor, for a keyword, a passage
naming it), then a new LoRA adapter (stage ``adapt``) trained on top of the input encoder with
the supervised contrastive loop.

A self-check guards the result: pseudo-queries of documents never used for training are searched
over the passages with the input encoder and with the adapted one (nDCG@10, a query's relevant
passages being those of its own document). Unless the adapted encoder scores higher, the output
is the input encoder unchanged, and the command says so.

Run directory (``--output``): ``adapt-data.json`` (the pairs, written once: a resumed run trains
on the same data), ``passages-<fingerprint>.npy`` (the input encoder's passage vectors),
``checkpoint-*/`` and, at the end, ``encoder/`` (an encoder directory recording its parent).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..manifest import fingerprint, read_json, write_json_atomic
from . import common
from .data import Example, Source
from .pairs import KINDS, Passage, make_pairs, pairs_source, passages
from .supervised import SupervisedConfig, batch_views

DEFAULT_KINDS = ("title", "keyword", "sentence")


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    corpus: str = ""
    model: str = ""  # the encoder to adapt (any --model spec)
    output: str = "runs/adapt"
    kinds: tuple[str, ...] = DEFAULT_KINDS  # title pairs are skipped where documents have no titles
    pairs: int = 2000  # training pairs in all, shared between the kinds
    heldout: int = 200  # pseudo-queries of other documents for the self-check
    max_passages: int = 50_000  # passages sampled for mining and the self-check on large corpora
    depth: tuple[int, int] = (5, 30)  # encoder ranks hard negatives are drawn from
    steps: int = 50
    minutes: float | None = None  # stop training after this much time (the encoder is still written)
    batch_size: int = 32
    mini_batch: int = 16
    lr: float = 1e-4
    warmup_steps: int = 5
    max_length: int = 192
    lora: common.LoraConfig = common.LoraConfig(dropout=0.0)  # dropout 0: 2.2x faster steps on a CPU
    device: str = "auto"
    seed: int = 42

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(f"unknown pair kind {', '.join(bad) or '(none)'}; valid kinds are: {', '.join(KINDS)}")
        for name in ("pairs", "heldout", "steps", "max_passages", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.minutes is not None and self.minutes <= 0:
            raise UsageError("--minutes must be positive")


def adapt(cfg: AdaptConfig, *, resume: bool = False, log=print) -> dict[str, Any]:
    """Adapt ``cfg.model`` to ``cfg.corpus``; returns the report (also in the encoder's manifest)."""
    from ..corpus import read_corpus
    from ..encoder import load_encoder

    run_dir = Path(cfg.output)
    data_file = run_dir / "adapt-data.json"
    if resume and not data_file.is_file():
        raise UsageError(f"nothing to resume in {run_dir} (no adapt-data.json)")
    if not resume and (run_dir / "encoder").exists():
        raise UsageError(f"{run_dir} already holds an adapted encoder: choose another --output (or --resume)")
    encoder = load_encoder(cfg.model)
    instruction = encoder.config.query_instruction or None
    pool = _sample(passages(read_corpus(cfg.corpus)), cfg.max_passages, cfg.seed)
    if not pool:
        raise UsageError(f"{cfg.corpus}: no passage of 10 words or more to make pairs from")
    vectors = _passage_vectors(encoder, pool, run_dir, log)
    if resume:
        data = read_json(data_file)
    else:
        data = _make_data(cfg, pool, encoder, vectors, instruction, log)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(data_file, data)
    sources = [_source(s) for s in data["sources"]]
    total = sum(len(s.examples) for s in sources)
    if total < 2 * cfg.batch_size or not any(len(s.examples) >= cfg.batch_size for s in sources):
        raise UsageError(f"{cfg.corpus}: only {total} training pairs could be made (need {2 * cfg.batch_size} "
                         f"or more): the corpus is too small to adapt to")
    before = _self_check(encoder, pool, vectors, data["heldout"], instruction)
    log(f"self-check before: nDCG@10 {before:.4f} on {len(data['heldout'])} held-out pseudo-queries")
    del encoder
    path = _train(cfg, sources, data, resume)
    adapted = load_encoder(str(path))
    after = _self_check(adapted, pool, None, data["heldout"], instruction)
    kept = after <= before
    report = {"parent": cfg.model, "corpus": str(cfg.corpus), "data_fingerprint": data["fingerprint"],
              "pairs": {s.name: len(s.examples) for s in sources}, "self_check": {
                  "heldout_queries": len(data["heldout"]), "ndcg@10_before": round(before, 4),
                  "ndcg@10_after": round(after, 4), "kept_input_encoder": kept}}
    manifest = read_json(path / "manifest.json")
    if kept:  # the adapter did not help: the output is the input encoder, and says why
        shutil.rmtree(path / "adapt", ignore_errors=True)
        manifest["adapters"] = [a for a in manifest["adapters"] if a != "adapt"]
        manifest["recipe"].pop("adapt", None)
    manifest["recipe"]["adapt_report"] = report
    manifest["parent"] = cfg.model
    write_json_atomic(path / "manifest.json", manifest)
    return {**report, "encoder": str(path)}


def _sample(pool: list[Passage], n: int, seed: int) -> list[Passage]:
    if len(pool) <= n:
        return pool
    docs = sorted({p.doc for p in pool})
    random.Random(seed).shuffle(docs)
    keep, count, by_doc = set(), 0, {}
    for p in pool:
        by_doc[p.doc] = by_doc.get(p.doc, 0) + 1
    for d in docs:
        if count + by_doc[d] > n:
            break
        keep.add(d)
        count += by_doc[d]
    return [p for p in pool if p.doc in keep]


def _passage_vectors(encoder, pool: list[Passage], run_dir: Path, log) -> np.ndarray:
    """The input encoder's vectors of every passage, cached in the run directory."""
    fp = fingerprint([encoder.fingerprint, [(p.id, p.content) for p in pool]])
    cache = run_dir / f"passages-{fp}.npy"
    if cache.is_file():
        return np.load(cache)
    vectors = _encode(encoder, [p.content for p in pool], None, "embedding passages", log)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".passages-{fp}.tmp.npy"
    np.save(tmp, vectors)
    tmp.replace(cache)
    return vectors


def _encode(encoder, texts: list[str], instruction: str | None, what: str, log) -> np.ndarray:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=len(texts))
        out = encoder.encode(texts, instruction, progress=lambda n, _: bar.advance(task, n))
    log(f"{what}: {len(texts)} texts")
    return out


def _make_data(cfg: AdaptConfig, pool: list[Passage], encoder, vectors: np.ndarray, instruction: str | None,
               log) -> dict[str, Any]:
    """Held-out pseudo-queries first (their documents never train), then training pairs per kind
    with negatives from the input encoder's ranking of the passages."""
    rng = random.Random(cfg.seed)
    kinds = [k for k in cfg.kinds if k != "title" or any(p.title.strip() for p in pool)]
    n_docs = len({p.doc for p in pool})
    per_kind_heldout = max(1, min(cfg.heldout, n_docs // 5) // len(kinds))  # at most a fifth of the documents
    heldout, used = [], set()
    for kind in kinds:
        for q, pos in make_pairs(pool, kind, per_kind_heldout, rng, skip_docs=frozenset(used)):
            heldout.append({"kind": kind, "query": q, "doc": pos.doc})
            used.add(pos.doc)
    per_kind = max(1, cfg.pairs // len(kinds))
    sources = []
    for kind in kinds:
        pairs = make_pairs(pool, kind, per_kind, rng, skip_docs=frozenset(used))
        if not pairs:
            log(f"no {kind} pairs in this corpus: skipped")
            continue
        q_vectors = _encode(encoder, [q for q, _ in pairs], instruction, f"mining negatives for {kind} pairs", log)
        rankings = _top(q_vectors, vectors, cfg.depth[1])
        src = pairs_source(f"adapt-{kind}", pairs, pool, instruction, depth=cfg.depth, seed=cfg.seed,
                           rankings=rankings, keyword=kind == "keyword")
        sources.append({"name": src.name, "instruction": src.instruction,
                        "examples": [dataclasses.asdict(e) for e in src.examples],
                        "judged": {q: sorted(v) for q, v in (src.judged or {}).items()}})
    if not sources:
        raise UsageError(f"{cfg.corpus}: no training pairs could be made from {n_docs} documents: the corpus is "
                         "too small to adapt to")
    fp = fingerprint([cfg.corpus, [(s["name"], len(s["examples"])) for s in sources], heldout])
    return {"fingerprint": fp, "heldout": heldout, "sources": sources}


def _top(q: np.ndarray, xb: np.ndarray, k: int, chunk: int = 1024) -> list[list[int]]:
    """Row numbers of ``xb`` by inner product with each row of ``q``, best first (top ``k``)."""
    k = min(k, len(xb))
    out = []
    for i in range(0, len(q), chunk):
        scores = q[i : i + chunk] @ xb.T  # (n, N)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, 1).argsort(axis=1)[:, ::-1]
        out.extend(np.take_along_axis(part, order, 1).tolist())
    return out


def _source(s: dict[str, Any]) -> Source:
    return Source(s["name"], tuple(Example(**e) for e in s["examples"]), s["instruction"],
                  {q: frozenset(v) for q, v in s["judged"].items()})


def _self_check(encoder, pool: list[Passage], vectors: np.ndarray | None, heldout: list[dict],
                instruction: str | None) -> float:
    """nDCG@10 of held-out pseudo-queries over the passages (relevant: their document's passages)."""
    from ..metrics import run_from_rankings, score_run

    if vectors is None:
        vectors = _encode(encoder, [p.content for p in pool], None, "self-check: embedding passages", print)
    q = encoder.encode([h["query"] for h in heldout], instruction)
    ranked = _top(q, vectors, 10)
    run = {str(i): [pool[j].id for j in row] for i, row in enumerate(ranked)}
    qrels = {str(i): {p.id: 1 for p in pool if p.doc == h["doc"]} for i, h in enumerate(heldout)}
    return score_run(run_from_rankings(run), qrels)[0]["ndcg@10"]


def _train(cfg: AdaptConfig, sources: list[Source], data: dict[str, Any], resume: bool) -> Path:
    from ..models import resolve
    from .contrastive import train_contrastive
    from .data import schedule

    parent = resolve(cfg.model).encoder or {}  # its pooling, instructions and max length carry over

    scfg = SupervisedConfig(model=cfg.model, output=cfg.output, steps=cfg.steps, batch_size=cfg.batch_size,
                            mini_batch=cfg.mini_batch, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                            max_length=cfg.max_length, lora=cfg.lora, save_every=5, device=cfg.device, seed=cfg.seed)
    plan = schedule(sources, cfg.steps, cfg.batch_size, cfg.seed)
    deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes else None
    return train_contrastive(
        scfg, "adapt", lambda step: batch_views(sources[plan[step][0]], plan[step][1]),
        recipe={"corpus": cfg.corpus, "data_fingerprint": data["fingerprint"], "kinds": list(cfg.kinds),
                "sources": {s.name: len(s.examples) for s in sources}},
        encoder_defaults={k: v for k, v in parent.get("encoder", {}).items() if k != "pooling"},
        data_fingerprint=data["fingerprint"], resume=resume, deadline=deadline,
    )
