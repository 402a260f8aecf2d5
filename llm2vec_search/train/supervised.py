"""Supervised contrastive training (the paper's optional step 4).

Anchors carry their source's instruction (query side only); each batch comes from one source;
the loss is InfoNCE over in-batch positives plus hard negatives when the source has them,
computed with the cached (GradCache) backward so large batches fit in memory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import UsageError
from ..manifest import fingerprint
from .contrastive import Batch, ContrastiveConfig, train_contrastive
from .data import DataSpec, Source, load_sources, schedule


@dataclasses.dataclass(frozen=True)
class SupervisedConfig(ContrastiveConfig):
    batch_size: int = 32
    max_length: int = 256
    lr: float = 2e-4
    steps: int = 500


def batch_views(source: Source, indices: list[int]) -> Batch:
    """One batch's loss views, without false in-batch negatives: examples whose positive repeats
    in the batch or whose hard negative is another anchor's positive are dropped, and where the
    source has qrels, a document judged relevant to an anchor is masked out of that anchor's
    candidates (in NFCorpus a query has 18 relevant documents on median, up to 1,363)."""
    chosen, positives = [], set()
    for i in indices:
        ex = source.examples[i]
        if ex.positive in positives:
            continue
        chosen.append(ex)
        positives.add(ex.positive)
    if source.has_negatives:
        chosen = [ex for ex in chosen if ex.negative not in positives]
    anchors = ([ex.query for ex in chosen], [source.instruction] * len(chosen))
    docs = ([ex.positive for ex in chosen], [None] * len(chosen))
    views = [anchors, docs]
    candidate_ids = [ex.positive_id for ex in chosen]
    if source.has_negatives:
        views.append(([ex.negative for ex in chosen], [None] * len(chosen)))
        candidate_ids += [ex.negative_id for ex in chosen]
    exclude = None
    if source.judged:
        exclude = torch.tensor([[j != i and d is not None and d in source.judged.get(ex.query_id, ())
                                 for j, d in enumerate(candidate_ids)] for i, ex in enumerate(chosen)])
        exclude = exclude if exclude.any() else None
    return Batch(views, exclude)


def train_supervised(cfg: SupervisedConfig, sources: list[Source], *, resume: bool | str = False,
                     quiet: bool = False, data_description: dict | None = None,
                     encoder_defaults: dict | None = None) -> Path:
    if not sources:
        raise UsageError("no training data: give --jsonl FILE and/or --beir DIR (or the bundled sources)")
    plan = schedule(sources, cfg.steps, cfg.batch_size, cfg.seed)

    def batch_at(step: int):
        src, idx = plan[step]
        return batch_views(sources[src], idx)

    summary = {s.name: {"examples": len(s.examples), "instruction": s.instruction,
                        "hard_negatives": s.has_negatives,
                        "steps": sum(1 for p, _ in plan if sources[p] is s)} for s in sources}
    data_fp = fingerprint([[s.name, s.instruction, [dataclasses.astuple(e) for e in s.examples]] for s in sources])
    return train_contrastive(
        cfg, "supervised", batch_at,
        recipe={"sources": summary, "data_fingerprint": data_fp, **(data_description or {})},
        encoder_defaults={"max_length": 512, "query_instruction": "", "document_instruction": "",
                          **(encoder_defaults or {})},
        data_fingerprint=data_fp, resume=resume, quiet=quiet,
    )


def train_supervised_on(cfg: SupervisedConfig, spec: DataSpec, *, resume: bool | str = False, log=print,
                        encoder_defaults: dict | None = None) -> Path:
    """``train supervised``: assemble the sources ``spec`` names (:func:`.data.load_sources`), then train."""
    sources, description = load_sources(spec, model=cfg.model, log=log)
    return train_supervised(cfg, sources, resume=resume, data_description=description,
                            encoder_defaults=encoder_defaults)
