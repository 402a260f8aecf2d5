"""Query files in, run files out: what ``query --queries`` reads and what ``query`` and ``eval``
write, in one place.

    queries.jsonl  {"_id" | "id": ..., "text": ...} per line     queries.tsv  id<TAB>text
    run.trec       qid Q0 doc rank score tag   (TREC run format, the one pytrec_eval and trec_eval read)
    run.jsonl      {"id": qid, "query": text, "results": [{"id", "score", "title", "text"}, ...]}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import write_text_atomic

RUN_FORMATS = ("jsonl", "trec")


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """Queries from JSONL ({"_id"|"id", "text"}) or TSV (id<TAB>text), as (id, text) in file order."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"queries file not found: {p}")
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not valid UTF-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if p.suffix in (".jsonl", ".json"):
            try:
                row = json.loads(line)
                rows.append((str(row.get("_id", row.get("id"))), row["text"]))
            except (ValueError, KeyError, AttributeError):
                raise UsageError(f"{p}:{n}: expected a JSON object with id/_id and text") from None
        else:
            parts = line.split("\t")
            if len(parts) < 2:
                raise UsageError(f"{p}:{n}: expected id<TAB>text")
            rows.append((parts[0], parts[1]))
    if not rows:
        raise UsageError(f"{p} holds no queries")
    return rows


def check_format(fmt: str) -> str:
    if fmt not in RUN_FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; valid: {', '.join(RUN_FORMATS)}")
    return fmt


def trec_lines(run: Iterable[tuple[str, Sequence[tuple[str, float]]]], tag: str) -> list[str]:
    """TREC run lines of ``(qid, [(doc id, score), ...] in rank order)``: ``qid Q0 doc rank score tag``."""
    return [f"{qid} Q0 {doc} {rank} {score:.6f} {tag}" for qid, docs in run
            for rank, (doc, score) in enumerate(docs, 1)]


def format_run(rows: Sequence[tuple[str, str]], results: Sequence[Sequence[Any]], fmt: str,
               tag: str = "l2v-search") -> str:
    """The run of queries ``rows`` (id, text) and their hits (objects with ``id``, ``score`` and
    ``to_dict()``) as ``fmt`` text: TREC lines or one JSON object per query."""
    if check_format(fmt) == "trec":
        lines = trec_lines(((qid, [(h.id, h.score) for h in hits]) for (qid, _), hits in zip(rows, results)), tag)
    else:
        lines = [json.dumps({"id": qid, "query": qtext, "results": [h.to_dict() for h in hits]}, ensure_ascii=False)
                 for (qid, qtext), hits in zip(rows, results)]
    return "\n".join(lines) + "\n"


def write_output(text: str, output: str | Path | None) -> None:
    """``text`` to the file ``output`` (atomically) or, for None, to stdout."""
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)
