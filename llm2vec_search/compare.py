"""Compare evaluation runs: metrics side by side, paired significance over per-query scores, a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError

COMPARED = ("ndcg@10", "recall@100", "mrr@10")


def load_run(folder: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        per_query = json.loads((folder / "per_query.json").read_text(encoding="utf-8"))
        metrics["metrics"]["ndcg@10"]
    except FileNotFoundError as e:
        raise UsageError(f"{folder} is not an evaluation run: {Path(e.filename).name} is missing") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{folder}: metrics.json or per_query.json is corrupt") from None
    return {"metrics": metrics, "per_query": per_query}


def compare_runs(folders: list[Path]) -> dict[str, Any]:
    """Each run's metrics, and a paired t-test (scipy) of each metric in COMPARED against the first run."""
    from scipy import stats

    if len(folders) < 1:
        raise UsageError("give at least one run folder")
    loaded = [load_run(f) for f in folders]
    base = loaded[0]["per_query"]
    rows = []
    for folder, run in zip(folders, loaded):
        m = run["metrics"]
        row = {"label": f"{folder.name} ({m['mode']})", "path": str(folder), "dataset": m["dataset"]["name"],
               "split": m["dataset"]["split"], "metrics": m["metrics"]}
        common = sorted(set(base) & set(run["per_query"]))
        if run is not loaded[0] and common:
            for key in COMPARED:
                a = [base[q][key] for q in common]
                b = [run["per_query"][q][key] for q in common]
                row[f"p_value_{key}"] = None if a == b else float(stats.ttest_rel(b, a).pvalue)
            row["paired_queries"] = len(common)
        rows.append(row)
    datasets = {(r["dataset"], r["split"]) for r in rows}
    return {"runs": rows, "same_dataset": len(datasets) == 1}


def plot_runs(result: dict[str, Any], path: Path) -> None:
    """Bars per metric and recall@k curves, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    metrics = ["ndcg@1", "ndcg@10", "ndcg@100", "mrr@10", "map@100"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        xs = [j + i * width for j in range(len(metrics))]
        ax1.bar(xs, [r["metrics"][m] for m in metrics], width, label=r["label"])
        ks = [10, 100, 1000]
        ax2.plot(ks, [r["metrics"][f"recall@{k}"] for k in ks], marker="o", label=r["label"])
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    ax1.set_ylim(0, 1)
    ax1.set_title("ranking quality")
    ax1.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("k")
    ax2.set_title("recall@k")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
