"""Streaming corpus readers: BEIR folders, JSONL, CSV/TSV, Parquet, a text file, a folder of .txt/.md.

Every reader yields :class:`Record` objects and never holds the corpus in memory. Problems are
reported with file and line; ``skip_invalid`` turns malformed rows into counted skips.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

ID_FIELDS = ("_id", "id", "doc_id", "docid")
BEIR_ID_FIELDS = ("_id", "id")  # corpus.jsonl and queries.jsonl of a BEIR folder
TEXT_FIELDS = ("text", "contents", "content", "body", "abstract", "passage")
TITLE_FIELDS = ("title",)
TEXT_SUFFIXES = (".txt", ".md")


@dataclasses.dataclass(frozen=True)
class Record:
    id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        """The text that gets embedded: BEIR's convention, title + " " + text."""
        return f"{self.title} {self.text}".strip() if self.title else self.text

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{self.title}\0{self.text}".encode()).hexdigest()[:16]


@dataclasses.dataclass
class ReadStats:
    records: int = 0
    empty: int = 0  # skipped: no text
    invalid: int = 0  # skipped with skip_invalid


@dataclasses.dataclass(frozen=True)
class Fields:
    id: str | None = None
    text: str | None = None
    title: str | None = None


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl", ".csv": "csv", ".tsv": "tsv",
               ".parquet": "parquet", ".txt": "text", ".md": "text"}
    if suffix not in formats:
        raise UsageError(f"cannot tell the format of {path}: expected a folder, .jsonl, .csv, .tsv, .parquet, .txt "
                         "or .md")
    return formats[suffix]


def read_corpus(path: str | Path, fields: Fields = Fields(), *, skip_invalid: bool = False,
                stats: ReadStats | None = None) -> Iterator[Record]:
    """Yield the records of a corpus, auto-detecting its format; empty texts are skipped and counted."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"corpus not found: {path}")
    stats = stats if stats is not None else ReadStats()
    fmt = detect_format(path)
    readers = {"beir": lambda: _read_jsonl(path / "corpus.jsonl", fields, skip_invalid, stats, ids=BEIR_ID_FIELDS),
               "jsonl": lambda: _read_jsonl(path, fields, skip_invalid, stats),
               "csv": lambda: _read_csv(path, ",", fields, skip_invalid, stats),
               "tsv": lambda: _read_csv(path, "\t", fields, skip_invalid, stats),
               "parquet": lambda: _read_parquet(path, fields, stats),
               "text": lambda: _read_text_file(path, stats),
               "folder": lambda: _read_folder(path, stats)}
    for rec in readers[fmt]():
        if not rec.text.strip() and not rec.title.strip():
            stats.empty += 1
            continue
        stats.records += 1
        yield rec


def _pick(row: dict, explicit: str | None, candidates: tuple[str, ...], where: str, required: bool,
          hints: bool = True) -> str:
    if explicit is not None:
        if explicit not in row:
            raise UsageError(f"{where}: no field {explicit!r} (fields: {', '.join(map(str, row))})")
        key = explicit
    else:
        key = next((c for c in candidates if c in row), None)
        if key is None:
            if required:
                hint = "; name one with --id-field/--text-field" if hints else ""
                raise UsageError(f"{where}: none of the fields {', '.join(candidates)} found "
                                 f"(fields: {', '.join(map(str, row))}){hint}")
            return ""
    value = row[key]
    return "" if value is None else str(value)


def _record(row: dict, fields: Fields, where: str, ids: tuple[str, ...] = ID_FIELDS, text_required: bool = True,
            hints: bool = True) -> Record:
    return Record(_pick(row, fields.id, ids, where, True, hints), _pick(row, fields.title, TITLE_FIELDS, where, False),
                  _pick(row, fields.text, TEXT_FIELDS, where, text_required, hints))


def _lines(path: Path, skip_invalid: bool, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """Lines of a UTF-8 file (gzip ok); undecodable lines are errors (or counted skips)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                if not skip_invalid:
                    raise UsageError(f"{path}:{lineno}: not valid UTF-8 (use --skip-invalid to skip)") from None
                stats.invalid += 1


def _read_jsonl(path: Path, fields: Fields, skip_invalid: bool, stats: ReadStats, *,
                ids: tuple[str, ...] = ID_FIELDS, text_required: bool = True, hints: bool = True
                ) -> Iterator[Record]:
    """Records of a JSONL file; ``hints``: errors name the options of ``index`` that help."""
    for lineno, line in _lines(path, skip_invalid, stats):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            yield _record(row, fields, where, ids, text_required, hints)
        except (ValueError, UsageError) as e:
            if not skip_invalid:
                msg = e.args[0] if isinstance(e, UsageError) else f"{where}: invalid JSON ({e})"
                raise UsageError(f"{msg} (use --skip-invalid to skip bad rows)" if hints else msg) from None
            stats.invalid += 1


# -- BEIR folders: corpus.jsonl, queries.jsonl, qrels/<split>.tsv ---------------------------------
def check_beir(folder: str | Path, split: str) -> Path:
    """``folder`` as a Path, or the error that says what a BEIR dataset with ``split`` lacks."""
    folder = Path(folder)
    missing = [f for f in ("corpus.jsonl", "queries.jsonl") if not (folder / f).is_file()]
    if missing:
        raise UsageError(f"{folder} is not a BEIR dataset: no {' or '.join(missing)} "
                         "(needs corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise UsageError(f"{folder} has no {split!r} split (available: {', '.join(splits) or 'none'})")
    return folder


def read_beir(folder: str | Path, split: str
              ) -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """``(corpus, queries, qrels)`` of a BEIR split, as in the files: doc id -> (title, text),
    query id -> text (``""`` where it has none), query id -> {doc id: grade} (every row, known
    ids or not). Ids are ``_id`` or ``id``; a bad row is an error at its file and line."""
    folder = check_beir(folder, split)

    def rows(name: str) -> Iterator[Record]:
        return _read_jsonl(folder / name, Fields(), False, ReadStats(), ids=BEIR_ID_FIELDS, text_required=False,
                           hints=False)

    corpus = {r.id: (r.title, r.text) for r in rows("corpus.jsonl")}
    queries = {r.id: r.text for r in rows("queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    path = folder / "qrels" / f"{split}.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if n == 1 and row and row[0] == "query-id" or not row:
                continue
            try:
                qid, did, grade = row[0].strip(), row[1].strip(), int(float(row[2]))
            except (IndexError, ValueError):
                raise UsageError(f"{path}:{n}: expected query-id, corpus-id, integer score") from None
            qrels.setdefault(qid, {})[did] = grade
    return corpus, queries, qrels


def _read_csv(path: Path, delimiter: str, fields: Fields, skip_invalid: bool, stats: ReadStats) -> Iterator[Record]:
    """CSV/TSV with a header row, parsed strictly: a quote left open, or text after a closing
    quote, is an error at the line where the bad row starts (or, with ``skip_invalid``, that row
    is counted and parsing starts again on the next line)."""
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = _Replay(f)
            header, line = None, 1  # the line where the next row starts
            while True:
                try:
                    for row in csv.reader(lines, delimiter=delimiter, strict=True):
                        where, line = f"{path}:{line}", line + lines.taken()
                        if not row:
                            continue
                        if header is None:
                            header = row
                        elif len(row) != len(header):
                            if not skip_invalid:
                                raise UsageError(f"{where}: wrong number of columns ({len(row)} for {len(header)}; "
                                                 "use --skip-invalid to skip bad rows)")
                            stats.invalid += 1
                        else:
                            yield _record(dict(zip(header, row)), fields, where)
                    return
                except csv.Error as e:
                    if not skip_invalid or header is None:
                        why = "a quote opened here is never closed" if "end of data" in str(e) else str(e)
                        raise UsageError(f"{path}:{line}: malformed CSV ({why}); use --skip-invalid to skip "
                                         "bad rows") from None
                    stats.invalid += 1
                    lines.again()  # from the line after the bad row's first
                    line += 1
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid UTF-8") from None


class _Replay:
    """The lines of a file for ``csv.reader``, keeping those of the row being parsed, so a bad row
    can be skipped by parsing again from the line after its first."""

    def __init__(self, f):
        self.f, self.row, self.queue = f, [], []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.queue.pop() if self.queue else next(self.f)
        self.row.append(line)
        return line

    def taken(self) -> int:
        """How many lines the row just parsed took (and forget them)."""
        n, self.row = len(self.row), []
        return n

    def again(self) -> None:
        self.queue.extend(reversed(self.row[1:]))
        self.row = []


def _read_parquet(path: Path, fields: Fields, stats: ReadStats) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise UsageError(f"{path}: not a readable Parquet file ({e})") from None
    for batch in pf.iter_batches(batch_size=4096):
        for i, row in enumerate(batch.to_pylist()):
            yield _record(row, fields, f"{path}: row {stats.records + i + 1}")


def _read_text_file(path: Path, stats: ReadStats) -> Iterator[Record]:
    """A plain text file: one document per paragraph (blank-line separated), id ``<file>:<n>``."""
    para: list[str] = []
    n = 0
    for _, line in _lines(path, False, stats):
        if line.strip():
            para.append(line.rstrip("\n"))
        elif para:
            n += 1
            yield Record(f"{path.name}:{n}", "", "\n".join(para))
            para = []
    if para:
        yield Record(f"{path.name}:{n + 1}", "", "\n".join(para))


def _read_folder(path: Path, stats: ReadStats) -> Iterator[Record]:
    """A folder of .txt/.md files (recursive): one document per file, its relative path as id."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise UsageError(f"{path} holds no corpus.jsonl and no .txt/.md files")
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{f}: not valid UTF-8") from None
        yield Record(str(f.relative_to(path)), "", text)
