"""Title -> body (or keyword -> document) training triplets from a BEIR corpus (no queries, no judgments used).

Each sampled document gives one row for `l2v-search train supervised --jsonl`: its title as the
query, its text without the title as the positive, and as hard negative the body of a document the
mining encoder ranks at `--depth` for that title (never the document itself). This is unsupervised
adaptation to the corpus (as in E5's title-abstract pairs or GPL), so evaluation on that corpus is
in-domain: say so wherever its numbers are reported.

With `--query keyword` the query is instead one rare word of the title that the body repeats (a
word of 4+ letters in `--df` documents of the corpus), the positive is the whole document, and the
negative never contains the word: one-word topic queries ("tangeretin", "kohlrabi") are where a
small dense encoder trails BM25, and these rows teach it to rank documents that name the topic.

    python recipes/title_pairs.py ../shared/data/scifact runs/titles-scifact.jsonl --n 1000 \
        --model llm2vec-smollm2-135m --index-dir runs/indexes
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from llm2vec_search.corpus import read_corpus
from llm2vec_search.errors import L2VError, UsageError
from llm2vec_search.instructions import instruction_for
from llm2vec_search.manifest import write_text_atomic
from llm2vec_search.train.data import doc_text, encoder_negatives
from llm2vec_search.train.pairs import pick_keywords, words


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("beir", type=Path, help="BEIR folder (its corpus.jsonl is read)")
    p.add_argument("output", type=Path, help="JSONL to write")
    p.add_argument("--n", type=int, default=1000, help="documents to sample")
    p.add_argument("--model", default="llm2vec-smollm2-135m", help="encoder that mines the negatives")
    p.add_argument("--index-dir", default=None, help="where eval caches that encoder's corpus index")
    p.add_argument("--depth", type=int, nargs=2, default=(5, 30), help="ranks to draw negatives from")
    p.add_argument("--min-words", type=int, default=30, help="skip documents with a shorter body")
    p.add_argument("--instruction", default=None,
                   help="query instruction (default: the dataset's own, as eval uses it)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--query", choices=("title", "keyword"), default="title", help="what a row's query is")
    p.add_argument("--df", type=int, nargs=2, default=(3, 30),
                   help="--query keyword: how many documents may contain the word (min, max)")
    p.add_argument("--skip", type=int, default=0,
                   help="leave out the first N sampled documents (an earlier run's, with the same seed and --n >= N)")
    args = p.parse_args(argv)
    try:
        if args.n < 1:
            raise UsageError(f"--n must be at least 1, got {args.n}")
        if not 0 <= args.skip < args.n:
            raise UsageError(f"--skip must be between 0 and --n - 1, got {args.skip}")
        corpus_file = args.beir / "corpus.jsonl"
        if not corpus_file.is_file():
            raise UsageError(f"{args.beir} is not a BEIR folder: corpus.jsonl is missing")
        docs = {r.id: (r.title.strip(), r.text.strip()) for r in read_corpus(args.beir)
                if len(r.title.split()) >= 3 and len(r.text.split()) >= args.min_words}
        if not docs:
            raise UsageError(f"{corpus_file}: no document with both a title and a body")
        rng = random.Random(args.seed)
        ids = sorted(docs)
        rng.shuffle(ids)
        ids = ids[args.skip : args.n]
        instruction = args.instruction or instruction_for(args.beir.resolve().name)
        if not instruction:
            raise UsageError(f"no known instruction for {args.beir.resolve().name!r}: pass --instruction")
        if args.query == "title":
            queries = {i: docs[i][0] for i in ids}
            own = {i: {i: 1} for i in ids}  # the document itself is never a negative
        else:
            bags = {d: words(f"{t} {b}") for d, (t, b) in docs.items()}
            queries = pick_keywords(docs, bags, ids, tuple(args.df), rng)
            naming = {w: {} for w in queries.values()}  # a document naming the word may be relevant: never a negative
            for d, bag in bags.items():
                for w in bag & naming.keys():
                    naming[w][d] = 1
            own = {i: naming[w] for i, w in queries.items()}
        if not queries:
            raise UsageError(f"no sampled document has a title word in {args.df[0]}-{args.df[1]} documents")
        negs = encoder_negatives(args.beir, {f"q:{i}": q for i, q in queries.items()},
                                 {f"q:{i}": o for i, o in own.items()}, tuple(args.depth), args.model, instruction,
                                 args.index_dir)
        rows = []
        for i, query in queries.items():
            cands = [d for d in negs.get(f"q:{i}", []) if d in docs]
            if cands:
                neg = docs[rng.choice(cands)]
                pos, neg = (docs[i][1], neg[1]) if args.query == "title" else (doc_text(*docs[i]), doc_text(*neg))
                rows.append({"query": query, "positive": pos, "negative": neg, "instruction": instruction})
        if not rows:
            raise UsageError(f"{args.model} ranked no other titled document for any query: nothing written")
        write_text_atomic(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{args.output}: {len(rows)} {args.query} -> {'body' if args.query == 'title' else 'document'} "
              f"triplets from {args.beir}")
    except L2VError as e:  # bad folder, malformed corpus row, unloadable --model: one line
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
