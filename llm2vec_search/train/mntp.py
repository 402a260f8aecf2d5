"""Step 2 of LLM2Vec: masked next-token prediction (MNTP) with LoRA.

With bidirectional attention on, some input tokens are masked and each masked token at
position i is predicted from the logits at position i-1 (the decoder's next-token head, now
seeing both sides). Text is packed into fixed blocks; only the base model gets LoRA, so the
adapter merges into the plain encoder (no LM head) later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..bidirectional import set_bidirectional
from ..devices import select_device
from ..errors import UsageError
from ..models import load_model_and_tokenizer, resolve
from . import common
from .loop import LoopConfig, check_every, choose_bf16, epoch_order, run_fingerprints, train_loop

MASK_POLICIES = ("bert", "all-mask")


@dataclasses.dataclass(frozen=True)
class MNTPConfig:
    model: str = "smollm2-135m"  # base model spec
    data: str = ""  # text file, one passage per line (.gz ok)
    output: str = "runs/mntp"  # run directory: checkpoints/ and the encoder directory encoder/
    max_seq_length: int = 128  # tokens per packed block
    batch_size: int = 8
    grad_accum: int = 1
    steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    mask_probability: float = 0.2
    mask_policy: str = "bert"  # bert: 80% mask / 10% random / 10% keep; all-mask: every chosen token masked
    mask_token: str | None = None  # default: the tokenizer's mask token, else "_" (the paper's choice)
    lora: common.LoraConfig = common.LoraConfig()
    max_passages: int | None = None  # read at most this many lines of data
    eval_blocks: int = 64  # held-out blocks for evaluation loss
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # None: where the hardware runs it fast
    device: str = "auto"
    seed: int = 42

    def __post_init__(self):
        if self.mask_policy not in MASK_POLICIES:
            raise UsageError(f"unknown mask policy {self.mask_policy!r}; valid: {', '.join(MASK_POLICIES)}")
        if not 0 < self.mask_probability < 1:
            raise UsageError(f"mask probability must be in (0, 1), got {self.mask_probability}")
        for name in ("batch_size", "steps", "max_seq_length", "grad_accum"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        check_every(save_every=self.save_every, eval_every=self.eval_every, keep_checkpoints=self.keep_checkpoints)


def mask_token_id(tokenizer, mask_token: str | None) -> int:
    token = mask_token or tokenizer.mask_token or "_"
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if token == tokenizer.mask_token:
        return tokenizer.mask_token_id
    if len(ids) != 1:
        raise UsageError(f"mask token {token!r} is not a single token for this tokenizer")
    return ids[0]


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_id: int,
    probability: float,
    policy: str,
    special_ids: set[int],
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask tokens for MNTP. Returns (inputs, labels) with labels -100 where nothing is predicted.

    ``labels`` are aligned with the *inputs*: a label at position i is the original token i,
    to be predicted from the logits at position i-1 (see :func:`mntp_loss`). Position 0 has no
    predecessor and is never masked, nor are special tokens and padding.
    """
    ids = input_ids.clone()
    candidates = torch.ones_like(ids, dtype=torch.bool)
    candidates[:, 0] = False
    if special_ids:
        candidates &= ~torch.isin(ids, torch.tensor(sorted(special_ids)))
    if attention_mask is not None:
        candidates &= attention_mask.bool()
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & candidates
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    if policy == "all-mask":
        ids[chosen] = mask_id
    else:
        roll = torch.rand(ids.shape, generator=generator)
        ids[chosen & (roll < 0.8)] = mask_id
        randomize = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[randomize] = torch.randint(vocab_size, ids.shape, generator=generator)[randomize]
    return ids, labels


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Cross-entropy of the token at i given the state at i-1, on masked positions only.

    hidden (B, T, H), labels (B, T). Only the selected states go through the LM head, which
    saves the (B*T, vocab) logits of unmasked positions.
    """
    target = labels[:, 1:]  # (B, T-1) label of position i, predicted at i-1
    sel = target != -100
    if not sel.any():
        return hidden.sum() * 0.0
    logits = lm_head(hidden[:, :-1][sel])  # (M, V)
    return torch.nn.functional.cross_entropy(logits.float(), target[sel])


def pack_blocks(texts, tokenizer, block: int, max_passages: int | None = None) -> np.ndarray:
    """Concatenate tokenized passages (EOS between them) and cut into (N, block) int32 blocks."""
    sep = tokenizer.eos_token_id
    buf: list[int] = []
    chunk: list[str] = []
    out: list[np.ndarray] = []

    def flush():
        if not chunk:
            return
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            buf.extend(ids)
            if sep is not None:
                buf.append(sep)
        chunk.clear()
        n = len(buf) // block
        if n:
            out.append(np.asarray(buf[: n * block], dtype=np.int32).reshape(n, block))
            del buf[: n * block]

    for i, text in enumerate(texts):
        if max_passages is not None and i >= max_passages:
            break
        chunk.append(text)
        if len(chunk) >= 2048:
            flush()
    flush()
    if not out:
        raise UsageError(f"the training data holds fewer than {block} tokens")
    return np.concatenate(out)


def train_mntp(cfg: MNTPConfig, *, resume: bool | str = False, quiet: bool = False) -> Path:
    """Run MNTP; returns the encoder directory (``<output>/encoder``)."""
    if not cfg.data:
        raise UsageError("no training data given (--data FILE)")
    common.check_file(cfg.data)  # fail before loading a model
    run_dir = Path(cfg.output)
    device = select_device(cfg.device)
    bf16 = choose_bf16(cfg.bf16, device)
    source = resolve(cfg.model)
    lm, tokenizer = load_model_and_tokenizer(source, device=device, causal_lm=True)
    set_bidirectional(lm, True)
    blocks = pack_blocks(common.read_lines(cfg.data), tokenizer, cfg.max_seq_length, cfg.max_passages)
    if len(blocks) <= cfg.eval_blocks + cfg.batch_size:
        raise UsageError(f"the training data gives only {len(blocks)} blocks of {cfg.max_seq_length} tokens; "
                         f"need more than eval ({cfg.eval_blocks}) + batch size ({cfg.batch_size})")
    eval_blocks, train_blocks = blocks[: cfg.eval_blocks], blocks[cfg.eval_blocks :]
    mask_id = mask_token_id(tokenizer, cfg.mask_token)
    special = set(tokenizer.all_special_ids)
    vocab = lm.config.get_text_config().vocab_size

    common.seed_everything(cfg.seed)
    peft_model = common.add_lora(lm.model, cfg.lora)
    if cfg.gradient_checkpointing:
        lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.model.enable_input_require_grads()
    data_fp = common.file_fingerprint(cfg.data)

    def batch_at(s: int, source_blocks: np.ndarray, idx=None):
        idx = epoch_order(len(source_blocks), s, cfg.batch_size, cfg.seed) if idx is None else idx
        ids = torch.from_numpy(source_blocks[idx].astype(np.int64))
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + s)
        return mask_tokens(ids, mask_id=mask_id, probability=cfg.mask_probability, policy=cfg.mask_policy,
                           special_ids=special, vocab_size=vocab, generator=gen)

    def loss_of(inputs, labels):
        with common.autocast(device, bf16):
            hidden = lm.model(input_ids=inputs.to(device)).last_hidden_state
            return mntp_loss(hidden, labels.to(device), lm.lm_head)

    def train_step(step: int) -> tuple[float, int]:
        total = 0.0
        for micro in range(cfg.grad_accum):
            inputs, labels = batch_at(step * cfg.grad_accum + micro, train_blocks)
            loss = loss_of(inputs, labels) / cfg.grad_accum
            loss.backward()
            total += loss.item()
        return total, cfg.batch_size * cfg.grad_accum * cfg.max_seq_length

    @torch.no_grad()
    def evaluate() -> float:
        losses = []
        for i in range(0, len(eval_blocks), cfg.batch_size):
            idx = np.arange(i, min(i + cfg.batch_size, len(eval_blocks)))
            inputs, labels = batch_at(-1 - i, eval_blocks, idx)
            losses.append(loss_of(inputs, labels).item())
        return float(np.mean(losses))

    loop = LoopConfig(steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                      save_every=cfg.save_every, keep_checkpoints=cfg.keep_checkpoints, seed=cfg.seed,
                      eval_every=cfg.eval_every, log_every=10)
    step, history = train_loop("mntp", peft_model, loop, train_step, run_dir=run_dir,
                               fingerprints=run_fingerprints(cfg, [], [data_fp, source.identity()]),
                               resume=resume, evaluate=evaluate, quiet=quiet)

    previous = (source.encoder or {}).get("recipe", {})
    recipe = {**previous, "mntp": {"config": dataclasses.asdict(cfg), "data": data_fp, "steps": step,
                       "final": history[-1] if history else None,
                       "eval_loss": [h["eval_loss"] for h in history if "eval_loss" in h]}}
    return common.write_encoder_dir(
        run_dir / "encoder", base_model=source.root, previous_adapters=list(source.adapters),
        new_adapter=("mntp", peft_model), encoder={"pooling": "mean", "max_length": 512}, recipe=recipe,
    )
