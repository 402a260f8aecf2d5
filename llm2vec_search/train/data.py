"""Supervised training data: (query, positive, optional hard negative) examples from several sources.

Each source keeps its own instruction, applied to the query side only (as in LLM2Vec, after
E5-mistral); batches are drawn from one source at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..corpus import read_beir
from ..errors import UsageError
from . import common

# Instructions for the symmetric training sets (E5-mistral / LLM2Vec wording).
NLI_INSTRUCTION = "Given a premise, retrieve a hypothesis that is entailed by the premise"
STS_INSTRUCTION = "Retrieve semantically similar text"
PARAPHRASE_INSTRUCTION = "Retrieve sentences that are paraphrases of the given sentence"


def beir_instruction(folder: str | Path) -> str | None:
    """The task instruction for a BEIR dataset folder, from the evaluation table (by folder name)."""
    from ..instructions import instruction_for

    return instruction_for(Path(folder).name)


@dataclasses.dataclass(frozen=True)
class Example:
    query: str
    positive: str
    negative: str | None = None
    # Ids, where the source has qrels: they let a batch mask documents judged relevant to
    # another anchor (false in-batch negatives).
    query_id: str | None = None
    positive_id: str | None = None
    negative_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    examples: tuple[Example, ...]
    instruction: str | None = None  # on the query side only
    judged: Mapping[str, frozenset[str]] | None = None  # query id -> ids of its relevant documents

    @property
    def has_negatives(self) -> bool:
        return all(e.negative is not None for e in self.examples)


def load_jsonl(path: str | Path, name: str | None = None) -> list[Source]:
    """Rows {"query", "positive", "negative"?, "instruction"?}; one source per distinct instruction."""
    path = Path(path)
    groups: dict[str | None, list[Example]] = defaultdict(list)
    for lineno, line in enumerate(common.read_lines(path), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{lineno}: expected a JSON object")
        for key in ("query", "positive"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UsageError(f"{path}:{lineno}: missing or empty {key!r}")
        neg = row.get("negative")
        if neg is not None and not isinstance(neg, str):
            raise UsageError(f"{path}:{lineno}: 'negative' must be a string")
        groups[row.get("instruction") or None].append(Example(row["query"], row["positive"], neg or None))
    if not groups:
        raise UsageError(f"{path} holds no training rows")
    base = name or path.stem
    return [Source(f"{base}" if len(groups) == 1 else f"{base}[{i}]", tuple(ex), instr)
            for i, (instr, ex) in enumerate(groups.items())]


def doc_text(title: str, text: str) -> str:
    """BEIR's document text: title + " " + text."""
    return f"{title} {text}".strip()


def load_beir(
    folder: str | Path,
    *,
    split: str = "train",
    instruction: str | None = None,
    max_pairs: int | None = None,
    max_pairs_per_query: int | None = None,
    negatives: str = "bm25",
    negative_depth: tuple[int, int] = (3, 30),
    negatives_model: str | None = None,
    index_dir: str | Path | None = None,
    holdout: int = 0,
    seed: int = 42,
) -> Source:
    """(query, relevant doc, hard negative) triples from a BEIR dataset's qrels.

    Hard negatives come from BM25 over the corpus (``negatives="bm25"``) or from the encoder
    ``negatives_model`` (``negatives="encoder"``; its corpus index is the one ``eval`` caches in
    ``index_dir``, built on first use), drawn at random from ranks ``negative_depth`` (skipping
    the very top, where unjudged relevant documents hide); a negative is never the positive nor
    any document judged for that query. ``holdout`` keeps the last N query ids (in numeric-aware
    order) out of training, for validation. The source keeps the qrels, so that training masks
    documents judged relevant to another anchor of the batch.
    """
    folder = Path(folder)
    corpus, queries, qrels = read_beir(folder, split)
    rng = random.Random(seed)
    pairs = []
    held_out = set(holdout_queries(qrels, holdout))
    for qid in sorted(qrels, key=_numeric_aware):
        if qid in held_out:
            continue
        rel = sorted(d for d, s in qrels[qid].items() if s > 0 and d in corpus)
        if not queries.get(qid, "").strip() or not rel:
            continue
        rng.shuffle(rel)
        pairs.extend((qid, d) for d in rel[:max_pairs_per_query])
    rng.shuffle(pairs)
    pairs = pairs[:max_pairs]
    if not pairs:
        raise UsageError(f"{folder}: no usable (query, relevant document) pairs in the {split!r} qrels")
    negs: dict[str, list[str]] = {}
    wanted = {q: queries[q] for q, _ in pairs}
    if negatives == "bm25":
        negs = bm25_negatives(corpus, wanted, qrels, negative_depth)
    elif negatives == "encoder":
        negs = encoder_negatives(folder, wanted, qrels, negative_depth, negatives_model, instruction, index_dir)
    elif negatives != "none":
        raise UsageError(f"unknown negatives {negatives!r}; valid: {', '.join(NEGATIVES)}")
    examples = []
    for qid, did in pairs:
        neg = negs[qid][rng.randrange(len(negs[qid]))] if negs.get(qid) else None
        if negatives != "none" and neg is None:
            continue
        examples.append(Example(queries[qid], doc_text(*corpus[did]), doc_text(*corpus[neg]) if neg else None,
                                query_id=qid, positive_id=did, negative_id=neg))
    judged = {q: frozenset(d for d, s in qrels[q].items() if s > 0) for q in {e.query_id for e in examples}}
    return Source(folder.name, tuple(examples), instruction, judged)


NEGATIVES = ("bm25", "encoder", "none")


def _numeric_aware(qid: str) -> tuple[int, str]:
    return len(qid), qid


def holdout_queries(qrels: Mapping[str, object], n: int) -> list[str]:
    """The query ids ``load_beir(..., holdout=n)`` keeps out of training: the last ``n`` in
    numeric-aware order (``recipes/validation_split.py`` turns them into a validation split)."""
    if n < 0:
        raise UsageError(f"holdout must be >= 0, got {n}")
    ordered = sorted(qrels, key=_numeric_aware)
    return ordered[len(ordered) - n :] if n else []


def bm25_negatives(corpus, queries: dict[str, str], qrels, depth: tuple[int, int]) -> dict[str, list[str]]:
    """Candidate hard negatives per query: BM25 ranks depth[0]..depth[1], minus judged documents."""
    import Stemmer

    from ..bm25 import import_bm25s

    bm25s = import_bm25s()
    ids = list(corpus)
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([doc_text(*corpus[i]) for i in ids], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
    qids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, _ = retriever.retrieve(tokens, k=min(depth[1], len(ids)), show_progress=False)
    return _unjudged(qrels, depth, {qid: [ids[j] for j in row] for qid, row in zip(qids, docs)})


def encoder_negatives(folder: Path, queries: dict[str, str], qrels, depth: tuple[int, int], model: str | None,
                      instruction: str | None, index_dir: str | Path | None) -> dict[str, list[str]]:
    """Candidate hard negatives per query: the encoder's ranks depth[0]..depth[1] over the corpus
    (queries carry the source's instruction), minus judged documents."""
    from ..encoder import load_encoder
    from ..evaluate import cached_index
    from ..search import SearchIndex

    if not model:
        raise UsageError("--negatives encoder needs the encoder that mines them (--negatives-model)")
    encoder = load_encoder(model)
    name, _, _ = cached_index(folder, index_dir, model, encoder)
    qids = list(queries)
    hits = SearchIndex.open(name, index_dir).search([queries[q] for q in qids], depth[1], encoder=encoder,
                                                     instruction=instruction or "", mode="dense")
    return _unjudged(qrels, depth, {qid: [h.id for h in row] for qid, row in zip(qids, hits)})


def _unjudged(qrels, depth: tuple[int, int], ranked: dict[str, list[str]]) -> dict[str, list[str]]:
    return {qid: [d for d in ids[depth[0] : depth[1]] if d not in qrels.get(qid, {})] for qid, ids in ranked.items()}


def load_snli_triplets(path: str | Path, max_rows: int | None = None) -> Source:
    path = Path(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            examples.append(Example(row["anchor"], row["positive"], row["hard_negative"]))
    return Source("snli", tuple(examples[:max_rows]), NLI_INSTRUCTION)


def load_mrpc(path: str | Path, max_rows: int | None = None) -> Source:
    """MRPC paraphrase pairs (Quality == 1) as positives; in-batch negatives only."""
    examples = []
    with open(path, encoding="utf-8-sig") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["Quality"] == "1":
                examples.append(Example(row["#1 String"], row["#2 String"]))
    return Source("mrpc", tuple(examples[:max_rows]), PARAPHRASE_INSTRUCTION)


def load_stsb(path: str | Path, min_score: float = 4.0, max_rows: int | None = None) -> Source:
    """STS-B pairs scored >= ``min_score`` (of 5) as positives (first 7 tab fields; no CSV quoting)."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 7 and float(fields[4]) >= min_score:
                examples.append(Example(fields[5], fields[6]))
    return Source("stsb", tuple(examples[:max_rows]), STS_INSTRUCTION)


def schedule(sources: Sequence[Source], steps: int, batch_size: int, seed: int) -> list[tuple[int, list[int]]]:
    """For each step, one source and the indices of its examples (a seeded plan; exact resume).

    Sources are visited in proportion to their size; each walks through its own permutation,
    reshuffled every epoch.
    """
    usable = [i for i, s in enumerate(sources) if len(s.examples) >= batch_size]
    if not usable:
        sizes = ", ".join(f"{s.name}: {len(s.examples)}" for s in sources)
        raise UsageError(f"batch size {batch_size} is larger than every training source ({sizes})")
    rng = np.random.default_rng(seed)
    weights = np.array([len(sources[i].examples) for i in usable], dtype=float)
    picks = rng.choice(usable, size=steps, p=weights / weights.sum())
    cursors = defaultdict(int)
    perms: dict[int, np.ndarray] = {}
    plan = []
    for src in picks:
        n = len(sources[src].examples)
        if src not in perms or cursors[src] + batch_size > n:
            perms[src] = rng.permutation(n)
            cursors[src] = 0
        plan.append((int(src), perms[src][cursors[src] : cursors[src] + batch_size].tolist()))
        cursors[src] += batch_size
    return plan


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The supervised training sources of ``train supervised``, one field per option."""

    jsonl: tuple[str, ...] = ()  # rows {"query", "positive", "negative"?, "instruction"?}
    beir: tuple[str, ...] = ()  # BEIR folders: pairs from their qrels
    beir_split: str = "train"
    beir_instructions: tuple[str, ...] = ()  # one per beir folder; default: the evaluation table's
    negatives: str = "bm25"  # hard negatives for beir: bm25 | encoder | none
    negatives_model: str | None = None  # the mining encoder for negatives="encoder" (default: the trained one)
    index_dir: str | None = None  # where the mining encoder's corpus indexes are cached
    max_pairs: int | None = None  # per beir source
    max_pairs_per_query: int | None = None
    holdout: int = 0  # the last N query ids of each beir source stay out (validation)
    snli: str | None = None
    mrpc: str | None = None
    stsb: str | None = None
    squad: str | None = None
    squad_pairs: int | None = None
    squad_instruction: str | None = None  # None: the generic default instruction
    max_rows: int | None = None  # per SNLI/MRPC/STS-B source
    seed: int = 42

    def __post_init__(self):
        if self.beir_instructions and len(self.beir_instructions) != len(self.beir):
            raise UsageError(f"{len(self.beir_instructions)} --beir-instruction for {len(self.beir)} --beir folders")
        if self.negatives not in NEGATIVES:
            raise UsageError(f"unknown negatives {self.negatives!r}; valid: {', '.join(NEGATIVES)}")


def load_sources(spec: DataSpec, *, model: str, log=print) -> tuple[list[Source], dict]:
    """The sources ``spec`` names, in option order (jsonl, beir, snli, mrpc, stsb, squad), and the
    description of the inputs that the encoder's recipe records; ``model`` is the encoder being
    trained (it mines ``negatives="encoder"`` unless ``negatives_model`` is given)."""
    miner = spec.negatives_model or model
    sources: list[Source] = []
    for path in spec.jsonl:
        sources.extend(load_jsonl(path))
    for i, folder in enumerate(spec.beir):
        instr = spec.beir_instructions[i] if spec.beir_instructions else beir_instruction(folder)
        sources.append(load_beir(folder, split=spec.beir_split, instruction=instr, max_pairs=spec.max_pairs,
                                 max_pairs_per_query=spec.max_pairs_per_query, negatives=spec.negatives,
                                 holdout=spec.holdout, negatives_model=miner, index_dir=spec.index_dir,
                                 seed=spec.seed))
    if spec.snli:
        sources.append(load_snli_triplets(spec.snli, spec.max_rows))
    if spec.mrpc:
        sources.append(load_mrpc(spec.mrpc, spec.max_rows))
    if spec.stsb:
        sources.append(load_stsb(spec.stsb, max_rows=spec.max_rows))
    if spec.squad:
        from ..instructions import DEFAULT_INSTRUCTION
        from .pairs import load_squad

        instruction = DEFAULT_INSTRUCTION if spec.squad_instruction is None else spec.squad_instruction
        sources.append(load_squad(spec.squad, max_pairs=spec.squad_pairs, seed=spec.seed, instruction=instruction))
    for s in sources:
        log(f"source {s.name}: {len(s.examples)} examples, instruction {s.instruction!r}, "
            f"hard negatives: {s.has_negatives}")
    description = {"inputs": {"jsonl": list(spec.jsonl) or None, "beir": list(spec.beir) or None,
                              "beir_split": spec.beir_split, "negatives": spec.negatives,
                              "negatives_model": miner if spec.negatives == "encoder" else None,
                              "max_pairs": spec.max_pairs, "holdout": spec.holdout, "snli": spec.snli,
                              "mrpc": spec.mrpc, "stsb": spec.stsb, "max_rows": spec.max_rows, "squad": spec.squad,
                              "squad_pairs": spec.squad_pairs}}
    return sources, description
