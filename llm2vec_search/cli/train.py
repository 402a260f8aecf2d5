"""``l2v-search train mntp|simcse|supervised``: the LLM2Vec training stages."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app, err, out
from .options import DEFAULT_MODEL, Json, print_json

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


@train_app.command("supervised")
def supervised_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Encoder of the previous stage.")],
    output: Annotated[str, typer.Option(help="Run directory (checkpoints; encoder in <output>/encoder).")],
    jsonl: Annotated[list[str] | None, typer.Option(help="JSONL: query, positive, negative?, instruction?")] = None,
    beir: Annotated[list[str] | None, typer.Option(help="BEIR folder: pairs from its qrels (--beir-split).")] = None,
    beir_split: str = "train",
    beir_instruction: Annotated[list[str] | None, typer.Option(help="Instruction per --beir, in order.")] = None,
    negatives: Annotated[str, typer.Option(help="Hard negatives for --beir: bm25 | encoder | none.")] = "bm25",
    negatives_model: Annotated[str | None, typer.Option(
        help="Encoder that mines --negatives encoder (default: --model).")] = None,
    index_dir: Annotated[str | None, typer.Option(
        help="Where the mining encoder's corpus indexes are cached (shared with eval).")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="At most this many pairs per --beir source.")] = None,
    max_pairs_per_query: int | None = None,
    holdout: Annotated[int, typer.Option(help="Keep the last N query ids of each --beir out (validation).")] = 0,
    snli: Annotated[str | None, typer.Option(help="SNLI triplets TSV (anchor, positive, hard_negative).")] = None,
    mrpc: Annotated[str | None, typer.Option(help="MRPC TSV: paraphrase pairs as positives.")] = None,
    stsb: Annotated[str | None, typer.Option(help="STS-B TSV: pairs scored >= 4 as positives.")] = None,
    squad: Annotated[str | None, typer.Option(
        help="SQuAD v1.1 JSON (.gz ok): question -> its paragraph, BM25 negatives without its answers.")] = None,
    squad_pairs: Annotated[int | None, typer.Option(help="At most this many SQuAD pairs.")] = None,
    squad_instruction: Annotated[str | None, typer.Option(
        help="Query instruction for --squad (default: the generic default instruction).")] = None,
    max_rows: Annotated[int | None, typer.Option(help="At most this many rows per SNLI/MRPC/STS-B source.")] = None,
    query_instruction: Annotated[str, typer.Option(help="The encoder's default query instruction.")] = "",
    document_instruction: Annotated[str, typer.Option(help="The encoder's default document instruction.")] = "",
    steps: int = 500,
    batch_size: int = 32,
    mini_batch: Annotated[int, typer.Option(help="Texts per forward pass (memory bound).")] = 16,
    lr: float = 2e-4,
    warmup_steps: int = 20,
    max_length: int = 256,
    temperature: float = 0.05,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    init_adapter: Annotated[str | None, typer.Option(
        help="Warm start: train this saved LoRA adapter further (same r, alpha, targets).")] = None,
    save_every: int = 25,
    gradient_checkpointing: bool = False,
    device: str = "auto",
    seed: Seed = 42,
    resume: Resume = False,
) -> None:
    """Supervised contrastive training on (query, positive, hard negative) data, one source per batch.

    Example: l2v-search train supervised -m runs/simcse/encoder --beir data/scifact --output runs/sup
    """
    from ..train.common import LoraConfig
    from ..train.data import DataSpec
    from ..train.supervised import SupervisedConfig, train_supervised_on

    cfg = SupervisedConfig(
        model=model, output=output, steps=steps, batch_size=batch_size, mini_batch=mini_batch, lr=lr,
        warmup_steps=warmup_steps, max_length=max_length, scale=1 / temperature,
        lora=LoraConfig(lora_r, lora_alpha, lora_dropout), init_adapter=init_adapter, save_every=save_every,
        gradient_checkpointing=gradient_checkpointing, device=device, seed=seed,
    )
    spec = DataSpec(
        jsonl=tuple(jsonl or ()), beir=tuple(beir or ()), beir_split=beir_split,
        beir_instructions=tuple(beir_instruction or ()), negatives=negatives, negatives_model=negatives_model,
        index_dir=index_dir, max_pairs=max_pairs, max_pairs_per_query=max_pairs_per_query, holdout=holdout,
        snli=snli, mrpc=mrpc, stsb=stsb, squad=squad, squad_pairs=squad_pairs, squad_instruction=squad_instruction,
        max_rows=max_rows, seed=seed,
    )
    defaults = {"query_instruction": query_instruction, "document_instruction": document_instruction}
    path = train_supervised_on(cfg, spec, resume=resume, log=out.print, encoder_defaults=defaults)
    out.print(f"encoder written to {path}")


@train_app.command("pairs")
def pairs_cmd(
    corpus: Annotated[str, typer.Argument(help="Corpus: BEIR folder, JSONL (.gz ok), CSV/TSV, Parquet, text.")],
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL to write (for train supervised --jsonl).")],
    kind: Annotated[str, typer.Option(help="title | sentence | crop (see llm2vec_search/train/pairs.py).")] = "title",
    n: Annotated[int, typer.Option("--n", help="Pairs to make (at most one per document).")] = 1000,
    instruction: Annotated[str | None, typer.Option(
        help="Query instruction (default: the generic one; sentence pairs: their own).")] = None,
    min_words: Annotated[int, typer.Option(help="Shorter paragraphs are not passages.")] = 10,
    seed: Seed = 42,
) -> None:
    """Training triplets from a corpus alone: (title|sentence|crop) -> passage, BM25 hard negatives.

    Example: l2v-search train pairs ../shared/data/wiki_en_partial/articles.jsonl.gz --kind sentence -o s.jsonl
    """
    from ..instructions import DEFAULT_INSTRUCTION
    from ..train.pairs import SENTENCE_INSTRUCTION, corpus_pairs, write_jsonl

    if instruction is None:
        instruction = SENTENCE_INSTRUCTION if kind == "sentence" else DEFAULT_INSTRUCTION
    source = corpus_pairs(corpus, kind, n, instruction=instruction or None, seed=seed, min_words=min_words)
    write_jsonl(source, output)
    out.print(f"{output}: {len(source.examples)} {kind} triplets from {corpus}")


@train_app.command("adapt")
def adapt_cmd(
    corpus: Annotated[str, typer.Argument(help="Your corpus: BEIR folder, JSONL (.gz ok), CSV/TSV, Parquet, text.")],
    output: Annotated[str, typer.Option(help="Run directory (checkpoints; the encoder in <output>/encoder).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The encoder to adapt.")] = DEFAULT_MODEL,
    kinds: Annotated[str, typer.Option(help="Pseudo-query kinds, comma-separated: title, keyword, sentence, crop.")] = (
        "title,keyword,sentence"),
    pairs: Annotated[int, typer.Option(help="Training pairs in all, shared between the kinds.")] = 2000,
    heldout: Annotated[int, typer.Option(help="Pseudo-queries of other documents for the self-check.")] = 200,
    steps: int = 50,
    minutes: Annotated[float | None, typer.Option(help="Stop training after this long (the encoder is kept).")] = None,
    batch_size: int = 32,
    mini_batch: Annotated[int, typer.Option(help="Texts per forward pass (memory bound).")] = 16,
    lr: float = 1e-4,
    max_length: Annotated[int, typer.Option(help="Tokens per training text.")] = 192,
    max_passages: Annotated[int, typer.Option(help="Passages sampled for mining on large corpora.")] = 50_000,
    device: str = "auto",
    seed: Seed = 42,
    resume: Resume = False,
    json_: Json = False,
) -> None:
    """Adapt an encoder to your corpus without queries or judgments (pseudo-queries, mined negatives).

    A self-check on held-out pseudo-queries keeps the input encoder when adaptation does not help.

    Example: l2v-search train adapt my-docs.jsonl --output runs/adapted --minutes 30
    """
    from ..train.adapt import AdaptConfig, adapt

    cfg = AdaptConfig(corpus=corpus, model=model, output=output, kinds=tuple(k.strip() for k in kinds.split(",")),
                      pairs=pairs, heldout=heldout, steps=steps, minutes=minutes, batch_size=batch_size,
                      mini_batch=mini_batch, lr=lr, max_length=max_length, max_passages=max_passages, device=device,
                      seed=seed)
    report = adapt(cfg, resume=resume, log=lambda msg: err.print(msg, highlight=False))
    if json_:
        print_json(report)
        return
    check = report["self_check"]
    verdict = ("adaptation did not help on the held-out pseudo-queries: the input encoder is kept"
               if check["kept_input_encoder"] else "adapted")
    out.print(f"{verdict} (nDCG@10 {check['ndcg@10_before']:.4f} -> {check['ndcg@10_after']:.4f} on "
              f"{check['heldout_queries']} held-out pseudo-queries); encoder written to {report['encoder']}",
              highlight=False)


@train_app.command("export")
def export_cmd(
    src: Annotated[str, typer.Argument(help="Encoder directory written by a training stage.")],
    dst: Annotated[str, typer.Argument(help="Where to write the exported encoder.")],
    dtype: Annotated[str, typer.Option(help="Adapter storage dtype: fp16 | bf16 | fp32.")] = "fp16",
) -> None:
    """Copy an encoder without checkpoints, adapters stored in fp16 (half the size).

    Example: l2v-search train export runs/supervised/encoder my-encoder
    """
    from pathlib import Path

    from ..train.common import export_encoder

    out.print(f"encoder exported to {export_encoder(Path(src), Path(dst), dtype)}")
