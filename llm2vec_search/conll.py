"""Readers for word-tagged sentences: CoNLL-U (Universal Dependencies) and IOB2 (NER) files.

Both yield :class:`TaggedSentence` records, one per sentence, and skip what is not a word of
the sentence: comment lines (``#``), multi-word token ranges (``1-2``: the syntactic words that
follow carry the tags) and empty nodes (``8.1``). A line that cannot be read is a
:class:`~llm2vec_search.errors.UsageError` naming ``file:line``. Gzipped files (``.gz``) are read
as they are.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

# CoNLL-U columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
_IOB2_TAG = re.compile(r"O|[BI]-\S+")


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int  # line number (1-based) of the sentence's first word
    sent_id: str | None = None  # from a "# sent_id = ..." comment


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\r\n")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except (OSError, EOFError) as e:  # a corrupt or truncated gzip file
        raise UsageError(f"{path}: {e}") from None


def _sentences(path: Path, parse) -> Iterator[TaggedSentence]:
    """Group lines into sentences (a blank line ends one); ``parse(n, line)`` returns
    ``(id, word, tag)`` or None for a line to skip."""
    words: list[str] = []
    tags: list[str] = []
    first, sent_id, last_id = 0, None, 0
    for n, line in _lines(path):
        if not line.strip():
            if words:
                yield TaggedSentence(tuple(words), tuple(tags), first, sent_id)
            words, tags, first, sent_id, last_id = [], [], 0, None, 0
            continue
        if line.startswith("#"):
            if line.startswith("# sent_id") and "=" in line:
                sent_id = line.split("=", 1)[1].strip()
            continue
        parsed = parse(n, line)
        if parsed is None:
            continue
        word_id, word, tag = parsed
        if word_id is not None:
            if word_id != last_id + 1:
                raise UsageError(f"{path}:{n}: word id {word_id} follows {last_id} (expected {last_id + 1})")
            last_id = word_id
        if not word.strip():
            raise UsageError(f"{path}:{n}: empty word")
        words.append(word)
        tags.append(tag)
        first = first or n
    if words:
        yield TaggedSentence(tuple(words), tuple(tags), first, sent_id)


def _word_id(path: Path, n: int, value: str) -> int | None:
    """The integer id of a word; None for a multi-word range (``1-2``) or an empty node (``8.1``)."""
    if value.isdigit():
        return int(value)
    if re.fullmatch(r"\d+-\d+|\d+\.\d+", value):
        return None
    raise UsageError(f"{path}:{n}: bad word id {value!r} (expected N, N-M or N.M)")


def read_conllu(path: str | Path, column: str = "upos") -> Iterator[TaggedSentence]:
    """Sentences of a CoNLL-U file, each word tagged with ``column`` (default UPOS)."""
    path = Path(path)
    if column not in CONLLU_COLUMNS:
        raise UsageError(f"unknown CoNLL-U column {column!r}; valid: {', '.join(CONLLU_COLUMNS)}")
    col = CONLLU_COLUMNS.index(column)

    def parse(n: int, line: str):
        fields = line.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            raise UsageError(f"{path}:{n}: expected 10 tab-separated columns, got {len(fields)}")
        word_id = _word_id(path, n, fields[0])
        if word_id is None:
            return None
        tag = fields[col].strip()
        if not tag or tag == "_":
            raise UsageError(f"{path}:{n}: no {column.upper()} tag (column {col + 1})")
        return word_id, fields[1], tag

    return _sentences(path, parse)


def read_iob2(path: str | Path) -> Iterator[TaggedSentence]:
    """Sentences of an IOB2 file: tab-separated ``ID WORD TAG [...]`` (Universal NER) or
    ``WORD TAG`` lines; tags are ``O``, ``B-TYPE`` or ``I-TYPE``."""
    path = Path(path)

    def parse(n: int, line: str):
        fields = line.split("\t")
        if len(fields) < 2:
            raise UsageError(f"{path}:{n}: expected tab-separated WORD and TAG columns, got {len(fields)} column")
        if len(fields) >= 3 and re.fullmatch(r"[\d.\-]+", fields[0]):
            word_id = _word_id(path, n, fields[0])
            if word_id is None:
                return None
            word, tag = fields[1], fields[2].strip()
        else:
            word_id, word, tag = None, fields[0], fields[1].strip()
        if not _IOB2_TAG.fullmatch(tag):
            raise UsageError(f"{path}:{n}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")
        return word_id, word, tag

    return _sentences(path, parse)
