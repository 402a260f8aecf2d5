"""Step 3 of LLM2Vec: unsupervised SimCSE.

Each sentence is embedded twice; the two views differ only by dropout (attention dropout 0.3
by default, as in the paper), and each view must find its twin among the batch (InfoNCE,
temperature 0.05). Mean pooling covers real tokens only (the reference implementation also
averages padding positions; we do not).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UsageError
from . import common
from .contrastive import Batch, ContrastiveConfig, train_contrastive
from .loop import epoch_order


@dataclasses.dataclass(frozen=True)
class SimCSEConfig(ContrastiveConfig):
    data: str = ""  # text file, one sentence per line (.gz ok)
    max_sentences: int | None = None
    attention_dropout: float = 0.3
    batch_size: int = 32
    steps: int = 1000
    lr: float = 3e-5
    max_length: int = 128


def train_simcse(cfg: SimCSEConfig, *, resume: bool | str = False, quiet: bool = False) -> Path:
    if not cfg.data:
        raise UsageError("no training data given (--data FILE)")
    sentences = []
    for i, line in enumerate(common.read_lines(cfg.data)):
        if cfg.max_sentences is not None and i >= cfg.max_sentences:
            break
        sentences.append(line)
    if len(sentences) < cfg.batch_size:
        raise UsageError(f"{cfg.data} holds {len(sentences)} sentences, fewer than the batch size {cfg.batch_size}")

    def batch_at(step: int):
        texts = [sentences[i] for i in epoch_order(len(sentences), step, cfg.batch_size, cfg.seed)]
        none = [None] * len(texts)
        return Batch([(texts, none), (texts, none)])  # the same sentences twice: dropout makes the views

    return train_contrastive(
        cfg, "simcse", batch_at,
        recipe={"data": common.file_fingerprint(cfg.data), "sentences": len(sentences)},
        encoder_defaults={"max_length": 512},
        data_fingerprint=[common.file_fingerprint(cfg.data), len(sentences)],
        resume=resume, quiet=quiet,
    )
