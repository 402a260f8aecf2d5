"""``l2v-search eval DATASET`` and ``l2v-search eval compare DIR...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UsageError
from .app import app, err, out
from .options import (
    DEFAULT_MODEL,
    Alpha,
    Causal,
    Device,
    Dtype,
    FusionMethod,
    Json,
    MaxLength,
    Model,
    Pooling,
    RescoreMultiplier,
    make_fusion,
    print_json,
)

SHOWN = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@10", "recall@100", "recall@1000", "mrr@10",
         "map@100")
COMPACT = ("ndcg@10", "ndcg@100", "recall@100", "recall@1000", "mrr@10", "map@100")


class _EvalGroup(typer.core.TyperGroup):
    """``eval DATASET`` runs an evaluation; ``eval compare DIR...`` compares runs; ``eval words TASK``
    probes word vectors.

    A first argument that is not a sub-command name is a dataset: route it to the hidden ``run``.
    (A dataset folder literally named ``compare`` or ``words`` can be given as ``./compare``.)
    """

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args.insert(0, "run")
        return super().resolve_command(ctx, args)


eval_app = typer.Typer(cls=_EvalGroup, no_args_is_help=True,
                       help="Evaluate retrieval on a BEIR dataset: eval DATASET [OPTIONS] (options: eval run --help); "
                            "compare runs: eval compare DIR...; or probe word vectors: eval words pos|ner")
app.add_typer(eval_app, name="eval")


@eval_app.command("run", hidden=True)
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv to evaluate.")] = "test",
    model: Model = DEFAULT_MODEL,
    mode: Annotated[str, typer.Option(help="dense | bm25 | hybrid (dense and BM25 fused; --fusion).")] = "hybrid",
    fusion: FusionMethod = None,
    alpha: Alpha = None,
    instruction: Annotated[str | None, typer.Option(
        "--instruction", "-i", help="Query instruction (default: the dataset's task instruction; '' for none).")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Documents retrieved per query.")] = 1000,
    ignore_identical_ids: Annotated[bool, typer.Option(
        help="Drop hits whose id equals the query id (BEIR's convention for ArguAna-like sets).")] = False,
    index_dir: Annotated[str | None, typer.Option(help="Where the cached evaluation indexes live.")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Write run.trec, per_query.json, metrics.json.")] = None,
    index_type: Annotated[str | None, typer.Option(help="FAISS factory string of the cached index.")] = None,
    on_disk: Annotated[bool, typer.Option("--on-disk", help="The cached index as an on-disk IVF.")] = False,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists visited per query.")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search depth.")] = None,
    vectors: Annotated[str, typer.Option(help="float | int8 | binary: the codes of the cached index's FAISS "
                                         "(int8/binary rescore with the float vectors).")] = "float",
    rescore_multiplier: RescoreMultiplier = None,
    pooling: Pooling = None,
    causal: Causal = False,
    max_length: MaxLength = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    json_: Json = False,
) -> None:
    """Index a BEIR dataset (cached), run its judged queries with the task instruction, score them.

    Examples:
      l2v-search eval ../shared/data/scifact --out runs/scifact-dense
      l2v-search eval ../shared/data/nfcorpus --mode bm25 --json
    """
    from ..evaluate import MODES, evaluate_beir

    if k <= 0:
        raise UsageError(f"--k must be positive, got {k}")
    if mode not in MODES:
        raise UsageError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")
    overrides = {"dtype": dtype, "device": device} | ({"causal": True} if causal else {})
    overrides |= {k_: v for k_, v in (("pooling", pooling), ("max_length", max_length)) if v is not None}
    result = evaluate_beir(dataset, split, model=model, mode=mode, fusion=make_fusion(fusion, alpha),
                           instruction=instruction, k=k,
                           ignore_identical_ids=ignore_identical_ids, index_dir=index_dir, out=out_dir,
                           encoder_overrides=overrides, index_type=index_type, on_disk=on_disk, nprobe=nprobe,
                           ef_search=ef_search, vectors=vectors, rescore_multiplier=rescore_multiplier)
    result.pop("per_query")
    d = result["dataset"]
    skipped = {key: d[key] for key in ("unknown_queries", "unknown_documents", "empty_queries") if d[key]}
    if skipped:
        err.print("qrels skipped: " + ", ".join(f"{v} {key.replace('_', ' ')}" for key, v in skipped.items()),
                  highlight=False)
    if json_:
        print_json(result)
        return
    who = "BM25" if mode == "bm25" else (result["encoder"]["model"].get("spec") or model)
    how = f"hybrid, {make_fusion(fusion, alpha).describe()}" if mode == "hybrid" else mode
    out.print(f"[bold]{d['name']}[/bold] / {d['split']}: {d['queries']} queries, {how} ({who})", highlight=False)
    table = Table("metric", "value")
    for key in SHOWN:
        table.add_row(key, f"{result['metrics'][key]:.4f}")
    out.print(table)
    t = result["timings"]
    instr = "none" if result["instruction"] is None else repr(result["instruction"])
    err.print(f"instruction: {instr}; index {t['index_seconds']:.1f}s, "
              f"search {t['search_seconds']:.1f}s" + (f"; written to {out_dir}" if out_dir else ""), highlight=False)


@eval_app.command("compare")
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="Evaluation output folders (from eval --out); the first is "
                                                   "the baseline.")],
    plot: Annotated[str | None, typer.Option(help="Write a PNG: bars per metric and recall@k curves.")] = None,
    test: Annotated[str, typer.Option(help="Paired test shown in the table: randomization | t-test.")] = (
        "randomization"),
    json_: Json = False,
) -> None:
    """Metrics of several runs side by side, with paired tests (randomization, t-test) against the first.

    Example: l2v-search eval compare runs/scifact-bm25 runs/scifact-dense --plot compare.png
    """
    from ..compare import compare_runs, plot_runs

    tests = {"randomization": "randomization", "t-test": "t_test"}
    if test not in tests:
        raise UsageError(f"unknown --test {test!r}; valid: {', '.join(tests)}")
    if plot and not plot.lower().endswith(".png"):
        raise UsageError(f"--plot must name a .png file, got {plot!r}")
    result = compare_runs(runs)
    if plot:
        plot_runs(result, Path(plot))
    if not result["same_dataset"]:
        err.print("warning: the runs are on different datasets, splits or qrels: no significance tests",
                  highlight=False)
    if json_:
        print_json(result)
        return
    first = result["runs"][0]
    tested = any("tests" in r for r in result["runs"])
    title = f"{first['dataset']} / {first['split']}" if result["same_dataset"] else "runs on different data"
    caption = f"(difference to the first run, p of the paired {test} test; * p < 0.05)" if tested else None
    table = Table("metric", *(r["label"] for r in result["runs"]), title=title, caption=caption)
    for key in SHOWN:
        cells = []
        for r in result["runs"]:
            cell = f"{r['metrics'][key]:.4f}"
            if (t := r.get("tests", {}).get(key)) is not None:
                p = t[tests[test]]
                cell += f" ({t['delta']:+.4f}, p={'n/a' if p is None else f'{p:.2g}'}{'*' if p and p < 0.05 else ''})"
            cells.append(cell)
        table.add_row(key, *cells)
    out.print(table)
    if plot:
        err.print(f"plot written to {plot}", highlight=False)


@eval_app.command("words")
def words_cmd(
    task: Annotated[str | None, typer.Argument(help="pos (UD English EWT UPOS, accuracy) | ner (Universal NER "
                                                    "EWT, entity F1).")] = None,
    model: Model = DEFAULT_MODEL,
    causal: Causal = False,
    layer: Annotated[int, typer.Option(help="Hidden state probed: 0 embeddings ... L last; -1 last, -2 the one "
                                            "before...")] = -1,
    word_pooling: Annotated[str, typer.Option(help="A word's vector: its first sub-token, or the mean of its "
                                                   "sub-tokens: first | mean.")] = "first",
    data: Annotated[str, typer.Option(help="Folder holding ud_ewt/ and uner_ewt/.")] = "../shared/data",
    train: Annotated[str | None, typer.Option(help="Training file instead of the task's (CoNLL-U for pos, "
                                                   "IOB2 for ner).")] = None,
    test: Annotated[str | None, typer.Option(help="Test file instead of the task's.")] = None,
    c: Annotated[float, typer.Option("--C", help="Inverse L2 strength of the logistic regression.")] = 1.0,
    max_iter: Annotated[int, typer.Option(help="lbfgs iterations of the probe.")] = 300,
    cache_dir: Annotated[str | None, typer.Option(
        help="Where word vectors are cached (default: $L2V_SEARCH_HOME/word-vectors).")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Write scores.json, manifest.json, "
                                                              "predictions.tsv.")] = None,
    max_length: MaxLength = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    json_: Json = False,
) -> None:
    """A linear probe (logistic regression) on frozen word vectors: train split -> test split.

    Word vectors are cached per encoder and layer, so probing again is cheap.

    Examples:
      l2v-search eval words pos
      l2v-search eval words ner --model smollm2-135m --causal --out runs/words/ner-causal
    """
    from ..probe import TASKS, ProbeConfig, evaluate_words
    from ..probe import task as find_task
    from ..tokens import WORD_POOLING

    if task is None:
        raise UsageError(f"eval words needs a task; valid tasks: {', '.join(TASKS)}")
    find_task(task)  # an unknown task fails before any model loads
    if word_pooling not in WORD_POOLING:
        raise UsageError(f"unknown --word-pooling {word_pooling!r}; valid: {', '.join(WORD_POOLING)}")
    probe = ProbeConfig(C=c, max_iter=max_iter)
    overrides = {"dtype": dtype, "device": device} | ({"causal": True} if causal else {})
    overrides |= {"max_length": max_length} if max_length is not None else {}
    result = evaluate_words(task, model=model, encoder_overrides=overrides, data=data, train=train, test=test,
                            layer=layer, word_pooling=word_pooling, probe=probe, cache_dir=cache_dir, out=out_dir)
    if json_:
        print_json(result)
        return
    d, p = result["data"], result["probe"]
    who = result["encoder"]["model"].get("spec") or model
    out.print(f"[bold]{task}[/bold]: {who}{' (causal)' if result['encoder']['causal'] else ''}, layer "
              f"{result['layer']} of {result['layers']}, {result['word_pooling']} sub-token; train "
              f"{d['train']['words']:,} words, test {d['test']['words']:,}", highlight=False)
    table = Table("", result["metric"])
    table.add_row("probe", f"{result['score']:.4f}")
    for name, value in result["baselines"].items():
        table.add_row(f"baseline: {name.replace('_', ' ')}", f"{value:.4f}")
    out.print(table)
    t = result["timings"]
    v = result["vectors"]
    reused = v["train"]["reused_shards"] + v["test"]["reused_shards"]
    shards = v["train"]["shards"] + v["test"]["shards"]
    err.print(f"probe: C={p['C']}, {p['n_iter']} lbfgs iterations{'' if p['converged'] else ' (not converged)'}; "
              f"vectors {t['vectors_seconds']:.1f}s ({reused}/{shards} shards cached), probe "
              f"{t['probe_seconds']:.1f}s, total {t['total_seconds']:.1f}s"
              + (f"; written to {out_dir}" if out_dir else ""), highlight=False)
