"""``l2v-search eval DATASET`` and ``l2v-search eval compare DIR...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UsageError
from . import app, err, out
from .options import DEFAULT_MODEL, Json, Model, print_json

SHOWN = ("ndcg@1", "ndcg@10", "ndcg@100", "recall@10", "recall@100", "recall@1000", "mrr@10", "map@100")


class _EvalGroup(typer.core.TyperGroup):
    """``eval DATASET`` runs an evaluation; ``eval compare DIR...`` compares runs."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands:
            args.insert(0, "run")
        return super().resolve_command(ctx, args)


eval_app = typer.Typer(cls=_EvalGroup, no_args_is_help=True,
                       help="Evaluate retrieval on a BEIR dataset, or compare evaluation runs.")
app.add_typer(eval_app, name="eval")


@eval_app.command("run", hidden=True)
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: str = "test",
    model: Model = DEFAULT_MODEL,
    mode: Annotated[str, typer.Option(help="dense | bm25 | hybrid.")] = "dense",
    instruction: Annotated[str | None, typer.Option("--instruction", "-i", help="Override the task instruction.")] = (
        None
    ),
    k: Annotated[int, typer.Option(help="Documents retrieved per query.")] = 1000,
    ignore_identical_ids: Annotated[bool, typer.Option(help="Drop hits whose id equals the query id.")] = False,
    index_dir: Annotated[str | None, typer.Option(help="Where the cached evaluation indexes live.")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Write run.trec, metrics.json, per_query.json.")] = None,
    json_: Json = False,
) -> None:
    """Index a BEIR dataset (cached), run its queries with the task instruction, and score them.

    Example: l2v-search eval ../shared/data/scifact --split test --out runs/eval-scifact
    """
    from ..evaluate import evaluate_beir

    if k <= 0:
        raise UsageError(f"--k must be positive, got {k}")
    result = evaluate_beir(dataset, split, model=model, mode=mode, instruction=instruction, k=k,
                           ignore_identical_ids=ignore_identical_ids, index_dir=index_dir, out=out_dir)
    if json_:
        print_json(result)
        return
    d = result["dataset"]
    table = Table("metric", "value", title=f"{d['name']} / {d['split']} ({d['queries']} queries, {result['mode']})")
    for key in SHOWN:
        table.add_row(key, f"{result['metrics'][key]:.4f}")
    out.print(table)
    skipped = {k: v for k, v in d.items() if k.startswith(("unknown", "empty")) and v}
    if skipped:
        err.print(f"qrels rows skipped: {skipped}")
    err.print(f"instruction: {result['instruction']!r}; {result['timings']['total_seconds']:.0f}s", highlight=False)


@eval_app.command("compare")
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="Evaluation output folders (from eval --out).")],
    plot: Annotated[str | None, typer.Option(help="Write a PNG comparing the runs.")] = None,
    json_: Json = False,
) -> None:
    """Metrics of several runs side by side, with a paired test against the first run.

    Example: l2v-search eval compare runs/eval-bm25 runs/eval-dense --plot compare.png
    """
    from ..compare import compare_runs, plot_runs

    result = compare_runs([Path(r) for r in runs])
    if plot:
        plot_runs(result, Path(plot))
    if json_:
        print_json(result)
        return
    table = Table("run", *SHOWN, "p (nDCG@10 vs first)", title="comparison")
    for r in result["runs"]:
        p = r.get("p_value_ndcg@10")
        table.add_row(r["label"], *(f"{r['metrics'][k]:.4f}" for k in SHOWN), "-" if p is None else f"{p:.3g}")
    out.print(table)
