"""Training pairs made from text alone, and from SQuAD-style question -> paragraph data.

The weak supervision of E5's CCPairs, Contriever and GPL, from any corpus and no judgments:

- ``title``: a document's title -> its first passage (a leading copy of the title cut, as
  Cranfield's abstracts repeat it); a Wikipedia article's title -> its lead paragraph.
- ``sentence``: one sentence -> the rest of its passage (the inverse cloze task).
- ``crop``: a short span of a passage -> the passage without that span (Contriever's random crops,
  kept disjoint so that the pair is not solved by copying).
- ``keyword``: one rare word of a title that the body repeats -> the whole document; one-word
  topic queries ("tangeretin", "kohlrabi") are where a small dense encoder trails BM25. Its
  negatives never contain the word.

Every pair gets a hard negative from BM25 over the same pool of passages (ranks 3-30 by default,
never a passage of the same document), and its source records which passages belong to the
query's own document, so that training masks them out of the softmax.

``load_squad`` reads SQuAD v1.1 JSON (the official layout): every question -> its paragraph,
with BM25 negatives that are neither the paragraph nor any paragraph holding one of its answers.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import UsageError
from .data import Example, Source

KINDS = ("title", "sentence", "crop", "keyword")
SENTENCE_INSTRUCTION = "Given a sentence, retrieve the passage it comes from"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
WORD = re.compile(r"[A-Za-z][A-Za-z-]{2,}[A-Za-z]")  # 4+ letters: no numbers, units or abbreviations like "DNA"


def words(text: str) -> set[str]:
    """The lowercased words of 4+ letters in ``text`` (keyword candidates)."""
    return {w.lower() for w in WORD.findall(text)}


def pick_keywords(docs: dict[str, tuple[str, str]], bags: dict[str, set[str]], ids: list[str],
                  df_range: tuple[int, int], rng: random.Random) -> dict[str, str]:
    """For each document id that has one, a word of its title that its body repeats and that
    ``df_range[0]..df_range[1]`` documents contain (rare enough to name the topic); ``docs`` maps
    id -> (title, body) and ``bags`` holds each document's :func:`words`."""
    df = Counter(w for bag in bags.values() for w in bag)
    chosen = {}
    for i in ids:
        title, body = docs[i]
        cands = sorted(w for w in words(title) & words(body) if df_range[0] <= df[w] <= df_range[1])
        if cands:
            chosen[i] = rng.choice(cands)
    return chosen


@dataclasses.dataclass(frozen=True)
class Passage:
    id: str  # unique: "<doc id>" or "<doc id>#<n>"
    doc: str  # the document it comes from (passages of one document are never each other's negatives)
    title: str
    text: str

    @property
    def content(self) -> str:
        """BEIR's convention: title + " " + text."""
        return f"{self.title} {self.text}".strip()


def split_sentences(text: str) -> list[str]:
    """Sentences by end punctuation followed by a capital or digit (good enough for pair mining)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def passages(records: Iterable, *, min_words: int = 10) -> list[Passage]:
    """The passages of corpus records (``llm2vec_search.corpus.Record``): each line-separated
    paragraph of ``min_words`` words or more (shorter lines, such as the section headings of a
    WikiExtractor dump, are dropped); a record of one paragraph is one passage with its own id."""
    out = []
    for r in records:
        paras = [p.strip() for p in r.text.split("\n") if len(p.split()) >= min_words]
        if len(paras) == 1:
            out.append(Passage(r.id, r.id, r.title or "", paras[0]))
        else:
            out.extend(Passage(f"{r.id}#{i}", r.id, r.title or "", p) for i, p in enumerate(paras))
    return out


def title_body(title: str, text: str) -> str:
    """The body without a leading copy of the title: Cranfield's texts start with their title as
    a heading ("... of a wing in a slipstream . an experimental study ..."). A title that opens
    the first sentence (a Wikipedia lead: "Paris is the capital ...") stays."""
    t, body = title.strip(), text.strip()
    if t and body.lower().startswith(t.lower()):
        rest = body[len(t) :]
        if t[-1] in ".:!?" or not rest.strip() or rest.lstrip()[0] in ".:\n":
            body = rest.lstrip(" .:-\n")
    return body


def make_pairs(passages: Sequence[Passage], kind: str, n: int, rng: random.Random, *,
               min_title_words: int = 1, crop_words: tuple[int, int] = (8, 24), df_range: tuple[int, int] = (3, 30),
               skip_docs: frozenset[str] = frozenset()) -> list[tuple[str, Passage]]:
    """Up to ``n`` (query, positive passage) pairs of one ``kind``, at most one per document,
    none from ``skip_docs``.

    The positive's text is what the encoder sees as the document: for ``title`` the body without
    the title, for ``keyword`` the whole first passage with its title, else the passage minus the
    query span, with its title in front (BEIR's form).
    """
    if kind not in KINDS:
        raise UsageError(f"unknown pair kind {kind!r}; valid kinds are: {', '.join(KINDS)}")
    by_doc: dict[str, list[Passage]] = defaultdict(list)
    for p in passages:
        by_doc[p.doc].append(p)
    docs = sorted(set(by_doc) - skip_docs)
    rng.shuffle(docs)
    if kind == "keyword":
        text = {d: (by_doc[d][0].title, " ".join(p.text for p in by_doc[d])) for d in by_doc}
        bags = {d: words(f"{t} {b}") for d, (t, b) in text.items()}
        chosen = pick_keywords(text, bags, docs, df_range, rng)
        return [(chosen[d], by_doc[d][0]) for d in docs if d in chosen][:n]
    pairs = []
    for d in docs:
        if len(pairs) >= n:
            break
        if kind == "title":
            first = by_doc[d][0]  # the lead paragraph of an article; a BEIR document's only passage
            body = title_body(first.title, first.text)
            if len(first.title.split()) >= min_title_words and len(body.split()) >= 10:
                pairs.append((first.title.strip(), dataclasses.replace(first, title="", text=body)))
            continue
        p = rng.choice(by_doc[d])
        if kind == "sentence":
            sents = split_sentences(p.text)
            if len(sents) < 3:
                continue
            i = rng.randrange(len(sents))
            if len(sents[i].split()) < 5:
                continue
            rest = " ".join(sents[:i] + sents[i + 1 :])
            pairs.append((sents[i], dataclasses.replace(p, text=rest)))
        else:  # crop: a span of the passage's words as the query, the remaining words as the positive
            toks = p.text.split()
            lo, hi = crop_words
            if len(toks) < hi + 20:
                continue
            size = rng.randint(lo, hi)
            start = rng.randrange(len(toks) - size + 1)
            rest = toks[:start] + toks[start + size :]
            pairs.append((" ".join(toks[start : start + size]), dataclasses.replace(p, text=" ".join(rest))))
    return pairs


def bm25_rankings(docs: Sequence[str], queries: Sequence[str], k: int) -> list[list[int]]:
    """Row numbers of ``docs`` ranked by BM25 (the index's bm25s set-up) for each query."""
    from ..bm25 import BM25Index

    index = BM25Index.build([str(i) for i in range(len(docs))], docs)
    return [[int(d) for d, _ in row] for row in index.search(queries, k)]


def pairs_source(name: str, pairs: Sequence[tuple[str, Passage]], pool: Sequence[Passage], instruction: str | None,
                 *, negatives: bool = True, depth: tuple[int, int] = (3, 30), seed: int = 42,
                 rankings: Sequence[Sequence[int]] | None = None, keyword: bool = False) -> Source:
    """A training source from (query, positive) pairs; hard negatives from ranks ``depth`` of
    ``rankings`` (rows of ``pool`` per pair, e.g. an encoder's), by default BM25's over ``pool``;
    never a passage of the positive's document, and with ``keyword`` never one naming the query."""
    if not pairs:
        raise UsageError(f"{name}: no training pairs could be made (too few or too short documents)")
    rng = random.Random(seed)
    doc_passages: dict[str, set[str]] = defaultdict(set)
    for p in pool:
        doc_passages[p.doc].add(p.id)
    naming: dict[str, set[str]] = {}  # keyword -> passages that contain it: never its negatives, masked in batches
    if keyword:
        naming = {q.lower(): set() for q, _ in pairs}
        for p in pool:
            for w in words(p.content) & naming.keys():
                naming[w].add(p.id)
    negs: list[Passage | None] = [None] * len(pairs)
    if negatives:
        # BM25 ranks only passages that contain a query word, all of which a keyword query must
        # avoid: keyword pairs rank by the positive's title and opening words, the keyword cut out.
        probes = [" ".join(w for w in f"{pos.title} {' '.join(pos.text.split()[:40])}".split()
                           if w.lower().strip(".,;:()") != q.lower()) if keyword else q for q, pos in pairs]
        ranked = rankings if rankings is not None else bm25_rankings([p.content for p in pool], probes, depth[1])
        for i, ((query, pos), row) in enumerate(zip(pairs, ranked)):
            avoid = naming.get(query.lower(), set())
            cands = [pool[j] for j in row[depth[0] : depth[1]] if pool[j].doc != pos.doc and pool[j].id not in avoid]
            negs[i] = rng.choice(cands) if cands else None
    examples, judged = [], {}
    for i, ((query, pos), neg) in enumerate(zip(pairs, negs)):
        if negatives and neg is None:
            continue
        qid = f"{name}:q{i}"
        judged[qid] = frozenset(doc_passages.get(pos.doc, set()) | {pos.id} | naming.get(query.lower(), set()))
        examples.append(Example(query, pos.content, neg.content if neg else None, query_id=qid,
                                positive_id=pos.id, negative_id=neg.id if neg else None))
    if not examples:
        raise UsageError(f"{name}: no hard negative found for any pair (corpus too small)")
    return Source(name, tuple(examples), instruction, judged)


def load_squad(path: str | Path, *, max_pairs: int | None = None, instruction: str | None = None,
               negatives: bool = True, depth: tuple[int, int] = (3, 30), seed: int = 42) -> Source:
    """SQuAD v1.1 JSON (``.gz`` ok): question -> "title paragraph", at most one question per
    paragraph until every paragraph has one (the most varied ``max_pairs``). Negatives are BM25
    ranks ``depth`` over all paragraphs, never the question's paragraph nor one that contains
    any of its answers (such a paragraph may answer it: a false negative)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"SQuAD file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)["data"]
        if not isinstance(data, list):
            raise ValueError("'data' is not a list of articles")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        raise UsageError(f"{path}: not SQuAD JSON ({e})") from None
    pool, questions = [], []  # questions: (paragraph row, question, answers)
    try:
        for a, article in enumerate(data):
            title = article.get("title", "").replace("_", " ")
            for p, para in enumerate(article.get("paragraphs", [])):
                row = len(pool)
                pool.append(Passage(f"squad-{a}-{p}", f"squad-{a}-{p}", title, para["context"]))
                for qa in para.get("qas", []):
                    answers = {x["text"].strip().lower() for x in qa.get("answers", []) if x.get("text", "").strip()}
                    questions.append((row, qa["question"].strip(), answers))
    except (AttributeError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not SQuAD JSON (article {a + 1}: {type(e).__name__} {e})") from None
    if not questions:
        raise UsageError(f"{path}: no questions")
    rng = random.Random(seed)
    rng.shuffle(questions)
    seen: set[int] = set()
    firsts, rest = [], []
    for q in questions:
        (rest if q[0] in seen else firsts).append(q)
        seen.add(q[0])
    chosen = (firsts + rest)[:max_pairs]
    negs: list[int | None] = [None] * len(chosen)
    if negatives:
        ranked = bm25_rankings([p.content for p in pool], [q for _, q, _ in chosen], depth[1])
        lowered = {}
        for i, ((row, _, answers), cands) in enumerate(zip(chosen, ranked)):
            ok = []
            for j in cands[depth[0] :]:
                if j == row:
                    continue
                text = lowered.setdefault(j, pool[j].text.lower())
                if not any(ans in text for ans in answers):
                    ok.append(j)
            negs[i] = rng.choice(ok) if ok else None
    examples = []
    for i, ((row, question, _), neg) in enumerate(zip(chosen, negs)):
        if negatives and neg is None:
            continue
        examples.append(Example(question, pool[row].content, pool[neg].content if neg is not None else None,
                                query_id=f"squad:q{i}", positive_id=pool[row].id,
                                negative_id=pool[neg].id if neg is not None else None))
    judged = {e.query_id: frozenset({e.positive_id}) for e in examples}
    return Source("squad", tuple(examples), instruction, judged)


def corpus_pairs(corpus: str | Path, kind: str, n: int, *, instruction: str | None = None, seed: int = 42,
                 negatives: bool = True, min_words: int = 10) -> Source:
    """``n`` pairs of ``kind`` from any corpus ``read_corpus`` takes, with BM25 hard negatives."""
    from ..corpus import read_corpus

    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    pool = passages(read_corpus(corpus), min_words=min_words)
    if not pool:
        raise UsageError(f"{corpus}: no passage of {min_words} words or more")
    pairs = make_pairs(pool, kind, n, random.Random(seed))
    return pairs_source(f"{Path(corpus).name}-{kind}", pairs, pool, instruction, negatives=negatives, seed=seed,
                        keyword=kind == "keyword")


def write_jsonl(source: Source, path: str | Path) -> Path:
    """The rows ``train supervised --jsonl`` reads: query, positive, negative, instruction."""
    from ..manifest import write_text_atomic

    rows = [{"query": e.query, "positive": e.positive, "negative": e.negative, "instruction": source.instruction}
            for e in source.examples]
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return Path(path)


def beir_title_pairs(folder: str | Path, *, n: int, model: str, query: str = "title", skip: int = 0,
                     index_dir: str | Path | None = None, depth: tuple[int, int] = (5, 30), min_words: int = 30,
                     df: tuple[int, int] = (3, 30), instruction: str | None = None, seed: int = 42) -> list[dict]:
    """Title -> body (``query="title"``) or keyword -> document (``"keyword"``) rows of a BEIR
    corpus, negatives mined by the encoder ``model`` (``recipes/title_pairs.py`` explains the data).

    ``n`` documents with a title of 3+ words and a body of ``min_words`` or more are sampled
    (seeded), the first ``skip`` of them left out (an earlier run's); a row's negative is drawn
    from ``model``'s ranks ``depth`` for its query, never the document itself (for a keyword: never
    a document naming it). Rows: query, positive, negative, instruction (default: the dataset's,
    as ``eval`` uses it).
    """
    from ..corpus import read_corpus
    from ..instructions import instruction_for
    from .data import doc_text, encoder_negatives

    folder = Path(folder)
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if not 0 <= skip < n:
        raise UsageError(f"--skip must be between 0 and --n - 1, got {skip}")
    corpus_file = folder / "corpus.jsonl"
    if not corpus_file.is_file():
        raise UsageError(f"{folder} is not a BEIR folder: corpus.jsonl is missing")
    docs = {r.id: (r.title.strip(), r.text.strip()) for r in read_corpus(folder)
            if len(r.title.split()) >= 3 and len(r.text.split()) >= min_words}
    if not docs:
        raise UsageError(f"{corpus_file}: no document with both a title and a body")
    rng = random.Random(seed)
    ids = sorted(docs)
    rng.shuffle(ids)
    ids = ids[skip:n]
    instruction = instruction or instruction_for(folder.resolve().name)
    if not instruction:
        raise UsageError(f"no known instruction for {folder.resolve().name!r}: pass --instruction")
    if query == "title":
        queries = {i: docs[i][0] for i in ids}
        own = {i: {i: 1} for i in ids}  # the document itself is never a negative
    else:
        bags = {d: words(f"{t} {b}") for d, (t, b) in docs.items()}
        queries = pick_keywords(docs, bags, ids, tuple(df), rng)
        naming: dict[str, dict[str, int]] = {w: {} for w in queries.values()}  # may be relevant: never a negative
        for d, bag in bags.items():
            for w in bag & naming.keys():
                naming[w][d] = 1
        own = {i: naming[w] for i, w in queries.items()}
    if not queries:
        raise UsageError(f"no sampled document has a title word in {df[0]}-{df[1]} documents")
    negs = encoder_negatives(folder, {f"q:{i}": q for i, q in queries.items()}, {f"q:{i}": o for i, o in own.items()},
                             tuple(depth), model, instruction, index_dir)
    rows = []
    for i, text in queries.items():
        cands = [d for d in negs.get(f"q:{i}", []) if d in docs]
        if cands:
            neg = docs[rng.choice(cands)]
            pos, neg = (docs[i][1], neg[1]) if query == "title" else (doc_text(*docs[i]), doc_text(*neg))
            rows.append({"query": text, "positive": pos, "negative": neg, "instruction": instruction})
    if not rows:
        raise UsageError(f"{model} ranked no other titled document for any query: nothing written")
    return rows
