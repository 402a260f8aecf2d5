"""The one training loop every stage runs (MNTP, SimCSE, supervised, adapt).

A stage builds its model, data and step; the loop owns the rest: AdamW with linear warmup then
cosine decay, gradient clipping, exact resume (data order, dropout draws, optimizer, scheduler
and RNG state come back from the checkpoint), periodic evaluation, atomic checkpoints with
pruning, progress on stderr, and an optional deadline.

A run is identified by a fingerprint of what shapes its trajectory: the configuration without
the fields in :data:`NOT_TRAJECTORY` (how long to train, how often to save or evaluate, where),
the data and the starting model. ``--resume`` with a larger ``--steps`` therefore extends a
finished run: the steps still to come follow the cosine schedule of the new total, as if the run
had been planned that long from the start (the steps done keep the rates they had; the rate
jumps up from the old schedule's end, with Adam's moments already warm, and decays to zero at
the new last step).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..manifest import fingerprint
from . import common
from .progress import TrainProgress

# Config fields that do not change what a step computes: a resumed run may change them.
NOT_TRAJECTORY = ("output", "steps", "save_every", "eval_every", "keep_checkpoints")
CHECKPOINT_FORMAT = 2  # 2: state.pt loads with torch.load(weights_only=True); trainer.json says so


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int
    lr: float
    warmup_steps: int
    save_every: int
    keep_checkpoints: int
    seed: int
    weight_decay: float = 0.0
    eval_every: int | None = None  # None: evaluate at the last step only (when there is an evaluator)
    log_every: int = 10  # steps between progress lines in a log file

    def __post_init__(self):
        check_every(save_every=self.save_every, eval_every=self.eval_every, keep_checkpoints=self.keep_checkpoints)


def check_every(**values: int | None) -> None:
    """Refuse a zero or negative period (``--save-every 0``) while the config is built, before any model loads."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def choose_bf16(bf16: bool | None, device: torch.device) -> bool:
    """bf16 autocast: as asked, else on a GPU, or on a CPU that runs it fast."""
    from ..devices import cpu_has_fast_bf16

    if bf16 is None and device.type == "cpu":
        return cpu_has_fast_bf16()
    return bool(bf16 or device.type == "cuda")


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine decay to zero at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def epoch_order(n: int, step: int, batch: int, seed: int) -> np.ndarray:
    """Indices (into ``n`` items) of ``step``'s batch: a seeded permutation per epoch, so a resumed
    run sees the same data."""
    start = step * batch
    idx: list[int] = []
    while len(idx) < batch:
        epoch, offset = divmod(start + len(idx), n)
        perm = np.random.default_rng(seed + epoch).permutation(n)
        idx.extend(perm[offset : offset + batch - len(idx)].tolist())
    return np.asarray(idx)


def run_fingerprints(cfg: Any, before: list[Any], after: list[Any]) -> tuple[str, str]:
    """``(fingerprint, legacy)`` of a run: ``fingerprint([*before, config, *after])`` over the
    config without :data:`NOT_TRAJECTORY`, and over the whole config (what checkpoints written
    before format 2 recorded)."""
    config = dataclasses.asdict(cfg)
    trajectory = {k: v for k, v in config.items() if k not in NOT_TRAJECTORY}
    return fingerprint([*before, trajectory, *after]), fingerprint([*before, config, *after])


StepFn = Callable[[int], tuple[float, int]]  # step -> (loss, tokens seen); gradients accumulated


def train_loop(
    stage: str,
    model: torch.nn.Module,
    cfg: LoopConfig,
    step_fn: StepFn,
    *,
    run_dir: Path,
    fingerprints: tuple[str, str],
    resume: bool | str = False,
    evaluate: Callable[[], float] | None = None,
    quiet: bool = False,
    deadline: float | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Train ``model``'s trainable parameters for ``cfg.steps`` steps; returns ``(steps done, history)``.

    ``step_fn(step)`` computes the loss of one step and calls ``backward`` (it may accumulate
    micro-batches); the loop seeds dropout with ``seed + step``, clips, steps the optimizer and
    scheduler, evaluates every ``eval_every`` steps and at the end, and checkpoints every
    ``save_every`` steps and at the end. ``deadline`` (a ``time.monotonic()`` value) ends training
    after the step that passes it, with a checkpoint (``--resume`` continues).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, cfg.steps))
    step, history = 0, []
    if resume:
        step, history = _resume(run_dir, resume, model, optimizer, scheduler, fingerprints, cfg.steps)

    model.train()
    with TrainProgress(stage, cfg.steps, start=step, quiet=quiet, log_every=cfg.log_every) as progress:
        while step < cfg.steps:
            t0 = time.perf_counter()
            torch.manual_seed(cfg.seed + step)  # dropout: the same draws after a resume
            optimizer.zero_grad(set_to_none=True)
            loss, tokens = step_fn(step)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            record: dict[str, Any] = {"step": step, "loss": round(loss, 5)}
            if evaluate is not None and (cfg.eval_every and step % cfg.eval_every == 0 or step == cfg.steps):
                model.eval()
                record["eval_loss"] = round(evaluate(), 5)
                model.train()
            history.append(record)
            progress.update(step, record, tokens / (time.perf_counter() - t0))
            out_of_time = deadline is not None and time.monotonic() > deadline
            if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
                common.save_checkpoint(run_dir, step, model, optimizer, scheduler,
                                       {"fingerprint": fingerprints[0], "format": CHECKPOINT_FORMAT,
                                        "history": history})
                common.prune_checkpoints(run_dir, cfg.keep_checkpoints)
            if out_of_time:
                break
    return step, history


def _resume(run_dir: Path, resume: bool | str, model, optimizer, scheduler, fingerprints: tuple[str, str],
            steps: int) -> tuple[int, list[dict[str, Any]]]:
    ckpt = Path(resume) if isinstance(resume, str) else common.latest_checkpoint(run_dir)
    if ckpt is None or not ckpt.exists():
        raise UsageError(f"no checkpoint to resume from in {run_dir}" if ckpt is None else f"{ckpt} not found")
    state = common.read_trainer_state(ckpt)
    legacy = "format" not in state  # written before format 2: its fingerprint covers the whole config
    if state.get("fingerprint") != fingerprints[legacy]:
        if legacy:
            raise UsageError(f"{ckpt} was written by an older version for other options: resume it with exactly "
                             "the options it was started with (its later checkpoints can then be extended)")
        raise UsageError(f"{ckpt} was written by a different run (config, data or model differ)")
    if state["step"] > steps:
        raise UsageError(f"{ckpt} is at step {state['step']}, past --steps {steps}")
    common.load_checkpoint(ckpt, model, optimizer, scheduler)
    # The rate of the next step under this run's schedule (a larger --steps: the longer cosine).
    for group, lam, base in zip(optimizer.param_groups, scheduler.lr_lambdas, scheduler.base_lrs):
        group["lr"] = base * lam(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return state["step"], state.get("history", [])
