"""Split a BEIR dataset's judged queries once into `val` and `test` halves, for collections that
have a single judged split (Cranfield, SQuAD dev).

The rule: the query ids of `qrels/<split>.tsv`, sorted numeric-aware (shorter ids first, then
by text: "2" before "10"), alternate val, test, val, test... Model choices use `val` only; `test`
is measured once, after the choice. The halves are committed under `benchmarks/splits/<name>/qrels/`;
this script writes them (byte-identical on a rerun) and links the dataset's corpus and queries
beside them, so that the folder is a BEIR dataset that `l2v-search eval` reads:

    python recipes/split_halves.py ../shared/data/cranfield benchmarks/splits/cranfield
    l2v-search eval benchmarks/splits/cranfield --split val

The folder keeps the dataset's name: eval picks the task instruction and the cached corpus index
by it, so the halves and the full split share one index.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llm2vec_search.errors import L2VError, UsageError
from llm2vec_search.evaluate import load_beir
from llm2vec_search.manifest import write_text_atomic
from llm2vec_search.train.data import _numeric_aware


def halves(qids) -> tuple[list[str], list[str]]:
    """(val, test): sorted numeric-aware, alternating, val first."""
    ordered = sorted(qids, key=_numeric_aware)
    return ordered[0::2], ordered[1::2]


def write_halves(src: Path, dst: Path, split: str = "test") -> tuple[int, int]:
    if src.resolve().name != dst.resolve().name:
        raise UsageError(f"{dst} must keep the dataset's folder name {src.resolve().name!r}")
    _, qrels, _ = load_beir(src, split)
    val, test = halves(qrels)
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    for name, qids in (("val", val), ("test", test)):
        rows = [f"{q}\t{d}\t{g}\n" for q in qids for d, g in sorted(qrels[q].items())]
        write_text_atomic(dst / "qrels" / f"{name}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(rows))
    for f in ("corpus.jsonl", "queries.jsonl"):
        link = dst / f
        if not link.exists():
            if link.is_symlink():  # dangling (the data moved): point it again
                link.unlink()
            link.symlink_to(os.path.relpath(src.resolve() / f, dst.resolve()))
    return len(val), len(test)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("beir", type=Path, help="BEIR folder with one judged split")
    p.add_argument("output", type=Path, help="folder to write (same name as the dataset's)")
    p.add_argument("--split", default="test", help="the judged split to halve")
    args = p.parse_args(argv)
    try:
        n_val, n_test = write_halves(args.beir, args.output, args.split)
    except L2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}/qrels: val {n_val} and test {n_test} queries of {args.beir} ({args.split})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
