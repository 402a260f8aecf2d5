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

The logic is ``llm2vec_search.train.pairs.beir_title_pairs``; this script is its command line.

    python recipes/title_pairs.py ../shared/data/scifact runs/titles-scifact.jsonl --n 1000 \
        --model llm2vec-smollm2-135m --index-dir runs/indexes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llm2vec_search.errors import L2VError
from llm2vec_search.manifest import write_text_atomic
from llm2vec_search.train.pairs import beir_title_pairs


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
        rows = beir_title_pairs(args.beir, n=args.n, model=args.model, query=args.query, skip=args.skip,
                                index_dir=args.index_dir, depth=tuple(args.depth), min_words=args.min_words,
                                df=tuple(args.df), instruction=args.instruction, seed=args.seed)
        write_text_atomic(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{args.output}: {len(rows)} {args.query} -> {'body' if args.query == 'title' else 'document'} "
              f"triplets from {args.beir}")
    except L2VError as e:  # bad folder, malformed corpus row, unloadable --model: one line
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
