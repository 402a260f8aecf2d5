"""The contrastive stage shared by SimCSE, supervised training and adapt (the loop is :mod:`.loop`).

The encoder of the previous stage (base + merged adapters) gets a fresh LoRA adapter; each
step embeds a batch's views (anchors, positives, optional hard negatives) with mean pooling
over real tokens only and minimises InfoNCE through the cached (GradCache) backward, so the
batch size is bounded by time, not memory. Data order, dropout draws, optimizer and scheduler
all resume exactly from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..bidirectional import set_bidirectional
from ..devices import select_device
from ..encoder import Encoder, EncoderConfig
from ..errors import UsageError
from ..models import load_model_and_tokenizer, resolve
from . import common
from .loop import LoopConfig, check_every, choose_bf16, run_fingerprints, train_loop
from .losses import InfoNCE, cached_contrastive_backward


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
    model: str = ""  # encoder spec of the previous stage (e.g. runs/mntp/encoder)
    output: str = "runs/contrastive"
    steps: int = 1000
    batch_size: int = 32  # anchors per step (effective batch; memory is bounded by mini_batch)
    mini_batch: int = 16  # texts per forward pass in the cached loss
    lr: float = 2e-4
    warmup_steps: int = 20
    scale: float = 20.0  # 1 / temperature (0.05)
    max_length: int = 128
    pooling: str = "mean"
    attention_dropout: float = 0.0  # SimCSE's augmentation: 0.3
    lora: common.LoraConfig = common.LoraConfig()
    init_adapter: str | None = None  # warm start: a saved LoRA adapter of the same shape, trained further
    save_every: int = 50
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    bf16: bool | None = None
    device: str = "auto"
    seed: int = 42

    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch", "max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        check_every(save_every=self.save_every, keep_checkpoints=self.keep_checkpoints)


View = tuple[list[str], list[str | None]]  # texts and their instructions


@dataclasses.dataclass
class Batch:
    """The views passed to the loss (anchors, positives[, negatives]); ``exclude`` (anchors x
    candidates, bool) marks candidates that are no negatives for an anchor (judged relevant)."""

    views: list[View]
    exclude: torch.Tensor | None = None


BatchFn = Callable[[int], Batch]


def train_contrastive(
    cfg: ContrastiveConfig,
    stage: str,
    batch_at: BatchFn,
    *,
    recipe: dict[str, Any],
    encoder_defaults: dict[str, Any],
    data_fingerprint: Any,
    resume: bool | str = False,
    quiet: bool = False,
    deadline: float | None = None,
) -> Path:
    """Train one contrastive stage named ``stage``; returns ``<output>/encoder``.

    ``deadline`` (a ``time.monotonic()`` value) ends training early after the step that passes
    it, with a checkpoint; the encoder is written from the steps done (``--resume`` continues)."""
    if not cfg.model:
        raise UsageError("no starting encoder given (--model)")
    device = select_device(cfg.device)
    bf16 = choose_bf16(cfg.bf16, device)
    source = resolve(cfg.model)
    model, tokenizer = load_model_and_tokenizer(
        source, device=device, config_overrides={"attention_dropout": cfg.attention_dropout}
    )
    set_bidirectional(model, True)
    common.seed_everything(cfg.seed)
    peft_model = common.add_lora(model, cfg.lora)
    warm_start = common.load_adapter_weights(peft_model, cfg.init_adapter, cfg.lora) if cfg.init_adapter else None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    encoder = Encoder(model, tokenizer, EncoderConfig(pooling=cfg.pooling, max_length=cfg.max_length,
                                                      batch_tokens=max(8192, cfg.max_length)), source)
    loss_fn = InfoNCE(cfg.scale)

    def embed(items: Sequence[tuple[str, str | None]]) -> torch.Tensor:
        texts, instructions = zip(*items)
        with common.autocast(device, bf16):
            return encoder.forward_texts(list(texts), list(instructions))

    def train_step(step: int) -> tuple[float, int]:
        batch = batch_at(step)
        views = [list(zip(texts, instrs)) for texts, instrs in batch.views]
        tokens_before = encoder.stats.tokens
        step_loss = partial(loss_fn, exclude=None if batch.exclude is None else batch.exclude.to(device))
        loss = cached_contrastive_backward(embed, views, step_loss, cfg.mini_batch, device)
        return loss, encoder.stats.tokens - tokens_before  # both passes of the cached loss

    loop = LoopConfig(steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, save_every=cfg.save_every,
                      keep_checkpoints=cfg.keep_checkpoints, seed=cfg.seed, log_every=5)
    step, history = train_loop(
        stage, peft_model, loop, train_step, run_dir=Path(cfg.output), resume=resume, quiet=quiet, deadline=deadline,
        fingerprints=run_fingerprints(cfg, [stage], [data_fingerprint, source.identity(), warm_start]))

    losses = [h["loss"] for h in history]
    previous = (source.encoder or {}).get("recipe", {})  # earlier stages' recipes carry over
    if warm_start:
        recipe = {**recipe, "init_adapter": warm_start}
    recipe = {**previous, stage: {"config": dataclasses.asdict(cfg), **recipe, "steps": step,
                      "loss_first_10": losses[:10], "loss_last_10": losses[-10:]}}
    return common.write_encoder_dir(
        Path(cfg.output) / "encoder", base_model=source.root, previous_adapters=list(source.adapters),
        new_adapter=(stage, peft_model), encoder={"pooling": cfg.pooling, **encoder_defaults}, recipe=recipe,
    )
