"""A BEIR folder whose ``val`` split holds the train queries that supervised training held out.

`l2v-search train supervised --beir DIR --holdout N` never trains on the last N query ids of
DIR's train qrels; this writes a view of DIR (corpus, queries and existing splits linked, not
copied) with those N queries as `qrels/val.tsv`, so that

    python recipes/validation_split.py ../shared/data/scifact runs/val/scifact --holdout 100
    l2v-search eval runs/val/scifact --split val --index-dir runs/indexes

scores a candidate encoder on them over the full corpus. The folder keeps the dataset's name:
eval picks the task instruction by it, and its cached corpus index is the one the test split uses.

``--sample-corpus N`` writes a smaller corpus instead of linking the full one: every document
judged for a held-out query plus N others drawn at random (seeded), for comparing encoders when
embedding the whole corpus once per candidate costs too much. Its scores are higher than the full
corpus's and comparable only with each other; give such a folder its own ``--index-dir``
(eval's cached index is named after the dataset folder, not its content).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from llm2vec_search.errors import L2VError, UsageError
from llm2vec_search.evaluate import load_beir
from llm2vec_search.manifest import write_text_atomic
from llm2vec_search.train.data import holdout_queries


def write_validation_split(src: Path, dst: Path, holdout: int, split: str = "train", name: str = "val",
                           sample_corpus: int | None = None, seed: int = 0) -> int:
    """Link ``src`` into ``dst`` and write ``dst/qrels/<name>.tsv``; returns the number of queries.
    With ``sample_corpus``, ``dst/corpus.jsonl`` holds the held-out queries' judged documents and
    that many others at random instead of linking the full corpus."""
    src, dst = src.resolve(), dst.resolve()
    if src.name != dst.name:
        raise UsageError(f"{dst} must keep the dataset's folder name {src.name!r} (eval picks the instruction "
                         "and the cached corpus index by it)")
    if holdout < 1:
        raise UsageError(f"--holdout must be at least 1, got {holdout}")
    _, qrels, _ = load_beir(src, split)
    if holdout >= len(qrels):
        raise UsageError(f"--holdout {holdout} leaves nothing to train on: {split!r} has {len(qrels)} queries")
    held = holdout_queries(qrels, holdout)
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    if sample_corpus is not None:
        _write_sample_corpus(src / "corpus.jsonl", dst / "corpus.jsonl", held, qrels, sample_corpus, seed)
    for rel in ["corpus.jsonl", "queries.jsonl", *(f"qrels/{p.name}" for p in (src / "qrels").glob("*.tsv"))]:
        link = dst / rel
        if rel != f"qrels/{name}.tsv" and not link.exists() and not link.is_symlink():
            link.symlink_to(src / rel)
    rows = [f"{q}\t{d}\t{g}\n" for q in held for d, g in sorted(qrels[q].items())]
    write_text_atomic(dst / "qrels" / f"{name}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(rows))
    return len(held)


def _write_sample_corpus(src: Path, dst: Path, held, qrels, others: int, seed: int) -> None:
    if others < 0:
        raise UsageError(f"--sample-corpus must be at least 0, got {others}")
    judged = {d for q in held for d in qrels[q]}
    lines = src.read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["_id"] for line in lines]
    rest = [i for i, d in enumerate(ids) if d not in judged]
    keep = set(random.Random(seed).sample(rest, min(others, len(rest))))
    chosen = [line for i, line in enumerate(lines) if ids[i] in judged or i in keep]
    if dst.is_symlink():
        dst.unlink()  # an earlier run linked the full corpus
    write_text_atomic(dst, "\n".join(chosen) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("beir", type=Path, help="BEIR folder with the train split training used")
    p.add_argument("output", type=Path, help="folder to write (same name as the dataset's)")
    p.add_argument("--holdout", type=int, required=True, help="the --holdout given to train supervised")
    p.add_argument("--split", default="train", help="the --beir-split given to train supervised")
    p.add_argument("--name", default="val", help="name of the split to write")
    p.add_argument("--sample-corpus", type=int, default=None, metavar="N",
                   help="a corpus of the judged documents + N random others (default: link the full corpus)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample-corpus")
    args = p.parse_args(argv)
    try:
        n = write_validation_split(args.beir, args.output, args.holdout, args.split, args.name,
                                   args.sample_corpus, args.seed)
    except L2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}/qrels/{args.name}.tsv: {n} held-out {args.split} queries of {args.beir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
