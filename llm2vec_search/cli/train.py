"""``l2v-search train mntp|simcse|supervised``: the LLM2Vec training stages."""

from __future__ import annotations

from typing import Annotated

import typer

from . import app, out

train_app = typer.Typer(help="Train an encoder: MNTP, then SimCSE, then supervised contrastive.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")

Resume = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --output.")]
Seed = Annotated[int, typer.Option(help="Random seed (data order, masking, dropout).")]


@train_app.command("mntp")
def mntp_cmd(
    data: Annotated[str, typer.Option(help="Text file, one passage per line (.gz ok).")],
    output: Annotated[str, typer.Option(help="Run directory (checkpoints; encoder in <output>/encoder).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Base model spec.")] = "smollm2-135m",
    steps: int = 1000,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_seq_length: int = 128,
    lr: float = 1e-4,
    warmup_steps: int = 50,
    mask_probability: float = 0.2,
    mask_policy: Annotated[str, typer.Option(help="bert (80/10/10) | all-mask")] = "bert",
    mask_token: Annotated[str | None, typer.Option(help="Default: the tokenizer's mask token, else '_'.")] = None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    max_passages: Annotated[int | None, typer.Option(help="Read at most this many passages.")] = None,
    eval_blocks: int = 64,
    eval_every: int = 100,
    save_every: int = 100,
    gradient_checkpointing: bool = False,
    device: str = "auto",
    seed: Seed = 42,
    resume: Resume = False,
) -> None:
    """Masked next-token prediction with LoRA on bidirectional attention.

    Example: l2v-search train mntp --data paragraphs.txt.gz --output runs/mntp --steps 600
    """
    from ..train.common import LoraConfig
    from ..train.mntp import MNTPConfig, train_mntp

    cfg = MNTPConfig(
        model=model, data=data, output=output, max_seq_length=max_seq_length, batch_size=batch_size,
        grad_accum=grad_accum, steps=steps, lr=lr, warmup_steps=warmup_steps, mask_probability=mask_probability,
        mask_policy=mask_policy, mask_token=mask_token, lora=LoraConfig(lora_r, lora_alpha, lora_dropout),
        max_passages=max_passages, eval_blocks=eval_blocks, eval_every=eval_every, save_every=save_every,
        gradient_checkpointing=gradient_checkpointing, device=device, seed=seed,
    )
    out.print(f"encoder written to {train_mntp(cfg, resume=resume)}")


@train_app.command("simcse")
def simcse_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Encoder of the previous stage.")],
    data: Annotated[str, typer.Option(help="Text file, one sentence per line (.gz ok).")],
    output: Annotated[str, typer.Option(help="Run directory (checkpoints; encoder in <output>/encoder).")],
    steps: int = 1000,
    batch_size: int = 32,
    mini_batch: Annotated[int, typer.Option(help="Texts per forward pass (memory bound).")] = 16,
    lr: float = 3e-5,
    warmup_steps: int = 20,
    max_length: int = 128,
    dropout: Annotated[float, typer.Option(help="Attention dropout making the two views.")] = 0.3,
    temperature: float = 0.05,
    max_sentences: int | None = None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    save_every: int = 50,
    gradient_checkpointing: bool = False,
    device: str = "auto",
    seed: Seed = 42,
    resume: Resume = False,
) -> None:
    """Unsupervised SimCSE: a sentence and itself under dropout are the positive pair.

    Example: l2v-search train simcse -m runs/mntp/encoder --data sentences.txt.gz --output runs/simcse
    """
    from ..train.common import LoraConfig
    from ..train.simcse import SimCSEConfig, train_simcse

    cfg = SimCSEConfig(
        model=model, data=data, output=output, steps=steps, batch_size=batch_size, mini_batch=mini_batch, lr=lr,
        warmup_steps=warmup_steps, max_length=max_length, attention_dropout=dropout, scale=1 / temperature,
        max_sentences=max_sentences, lora=LoraConfig(lora_r, lora_alpha, lora_dropout), save_every=save_every,
        gradient_checkpointing=gradient_checkpointing, device=device, seed=seed,
    )
    out.print(f"encoder written to {train_simcse(cfg, resume=resume)}")
