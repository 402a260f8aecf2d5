"""Let the ``mteb`` package evaluate this project's encoders (optional extra: ``pip install
'llm2vec-search[mteb]'``; tested with mteb 2.26).

    import mteb
    from llm2vec_search.mteb_adapter import MtebEncoder

    model = MtebEncoder("llm2vec-smollm2-135m")
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]), cache=None)

Instructions: queries get the task instruction of :mod:`~llm2vec_search.instructions` (LLM2Vec's
wording) where the task is in that table, else the task's own prompt from mteb's metadata;
documents get none (the encoder's own document instruction, as in ``l2v-search index``). Symmetric
tasks (STS, classification, clustering) pass no prompt type: both sides get the task prompt, as
LLM2Vec did. The instruction is tokenized apart from the text and left out of pooling, exactly
as in ``encode``/``query``, so mteb's numbers describe the vectors this project serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UsageError
from .instructions import instruction_for
from .models import DEFAULT_ENCODER

try:
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as e:  # the extra is not installed
    raise UsageError("the mteb adapter needs mteb: pip install 'llm2vec-search[mteb]'") from e

__all__ = ["MtebEncoder"]


class MtebEncoder(AbsEncoder):
    """An mteb encoder over :class:`~llm2vec_search.encoder.Encoder`.

    ``model`` is a spec for :func:`~llm2vec_search.encoder.load_encoder` or a loaded encoder;
    ``overrides`` are EncoderConfig fields (pooling, max_length, dtype...). ``use_table=False``
    uses mteb's task prompts everywhere instead of this project's instruction table.
    """

    def __init__(self, model: Any = DEFAULT_ENCODER, *, name: str | None = None, use_table: bool = True,
                 **overrides: Any):
        if isinstance(model, str):
            from .encoder import load_encoder

            spec, model = model, load_encoder(model, **overrides)
        else:
            spec = getattr(getattr(model, "source", None), "spec", None) or type(model).__name__
        self.model = model
        self.use_table = use_table
        self.instructions_used: dict[str, str | None] = {}  # "task/prompt_type" -> instruction, for the record
        # mteb names result folders by model name and revision; the fingerprint stands for the revision.
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name or f"llm2vec-search/{str(spec).rstrip('/').rsplit('/', 1)[-1]}",
            "revision": model.fingerprint[:12], "embed_dim": model.dim, "max_tokens": model.config.max_length,
            "similarity_fn_name": ScoringFunction.COSINE if model.config.normalize else ScoringFunction.DOT_PRODUCT,
            "use_instructions": True, "framework": ["PyTorch"], "languages": ["eng-Latn"],
        })

    def instruction(self, task_metadata, prompt_type: PromptType | None) -> str | None:
        """The instruction for one side of a task (None: the encoder's default for that side)."""
        if prompt_type == PromptType.document:
            return None
        if self.use_table and (found := instruction_for(task_metadata.name)) is not None:
            return found
        return self.get_instruction(task_metadata, prompt_type) or None

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """(N, dim) float32 embeddings of every text in ``inputs`` (mteb's DataLoader of batches)."""
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = self.instruction(task_metadata, prompt_type)
        side = prompt_type.value if prompt_type is not None else "both"
        self.instructions_used[f"{task_metadata.name}/{side}"] = instruction
        if not texts:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        if prompt_type == PromptType.document:
            return self.model.encode_documents(texts)
        if prompt_type == PromptType.query:
            return self.model.encode_queries(texts, instruction)
        return self.model.encode(texts, instruction)
