"""Compare evaluation runs: metrics side by side, paired significance over per-query scores, a plot.

Each run after the first is tested against the first on the queries both scored, with two paired
tests per metric: Student's paired t-test (scipy ``ttest_rel``) and a two-sided randomization
test that flips the sign of per-query differences (scipy ``permutation_test``, the test
Smucker et al., 2007 recommend for IR). Runs on different data are shown but not tested.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .errors import UsageError
from .metrics import METRICS

RESAMPLES = 10_000  # randomization test: p is resolved to about 1e-4
BAR_METRICS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "mrr@10", "map@100")
RECALL_KS = (10, 100, 1000)


def load_run(folder: str | Path) -> dict[str, Any]:
    """``{"metrics": <metrics.json>, "per_query": <per_query.json>}`` of an ``eval --out`` folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not an evaluation run folder (not a directory)")
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        per_query = json.loads((folder / "per_query.json").read_text(encoding="utf-8"))
        values = metrics["metrics"]
        missing = [m for m in METRICS if not isinstance(values.get(m), (int, float))]
        bad = [q for q, v in per_query.items() if any(not isinstance(v.get(m), (int, float)) for m in METRICS)]
        metrics["dataset"]["name"], metrics["dataset"]["split"]
    except FileNotFoundError as e:
        raise UsageError(f"{folder} is not an evaluation run: {Path(e.filename).name} is missing") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{folder}: metrics.json or per_query.json is corrupt (rerun eval --out)") from None
    if missing or bad or not per_query:
        what = f"metrics {', '.join(missing)}" if missing else f"{len(bad)} queries" if bad else "no queries"
        raise UsageError(f"{folder}: metrics.json or per_query.json is corrupt ({what} missing or not numbers)")
    return {"metrics": metrics, "per_query": per_query}


def _label(folder: Path, m: dict[str, Any]) -> str:
    enc = ((m.get("encoder") or {}).get("model") or {}).get("spec")
    return f"{folder.name} ({m.get('mode', '?')}{', ' + Path(str(enc)).name if enc else ''})"


def paired_tests(a: list[float], b: list[float], seed: int = 0) -> dict[str, float | None]:
    """p-values of b vs a (same queries, same order): paired t-test and sign-flip randomization test.

    None where the differences are all zero (no evidence either way, and scipy's t is undefined).
    """
    import numpy as np
    from scipy import stats

    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if not diff.size or np.allclose(diff, 0):
        return {"t_test": None, "randomization": None}
    with warnings.catch_warnings():  # near-identical runs: scipy warns of precision loss, p is still valid
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(b, a)
    perm = stats.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=RESAMPLES,
                                  alternative="two-sided", rng=np.random.default_rng(seed))
    return {"t_test": None if np.isnan(t.pvalue) else float(t.pvalue), "randomization": float(perm.pvalue)}


def compare_runs(folders: list[str | Path]) -> dict[str, Any]:
    """Each run's metrics and, for runs after the first on the same data, paired tests of every
    metric against the first: ``row["tests"][metric] = {"delta", "t_test", "randomization"}``."""
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise UsageError("compare needs scipy: pip install 'llm2vec-search[plot]'") from None
    if not folders:
        raise UsageError("give at least one run folder")
    folders = [Path(f) for f in folders]
    loaded = [load_run(f) for f in folders]
    base = loaded[0]
    rows = []
    for folder, run in zip(folders, loaded):
        m = run["metrics"]
        d = m["dataset"]
        row: dict[str, Any] = {"label": _label(folder, m), "path": str(folder), "dataset": d["name"],
                               "split": d["split"], "fingerprint": d.get("fingerprint"), "mode": m.get("mode"),
                               "metrics": {k: m["metrics"][k] for k in METRICS}}
        same = (d["name"], d["split"], d.get("fingerprint")) == (
            base["metrics"]["dataset"]["name"], base["metrics"]["dataset"]["split"],
            base["metrics"]["dataset"].get("fingerprint"))
        common = sorted(set(base["per_query"]) & set(run["per_query"]))
        if run is not base and same and common:
            row["paired_queries"] = len(common)
            row["tests"] = {}
            for key in METRICS:
                a = [base["per_query"][q][key] for q in common]
                b = [run["per_query"][q][key] for q in common]
                row["tests"][key] = {"delta": (sum(b) - sum(a)) / len(common), **paired_tests(a, b)}
        rows.append(row)
    datasets = {(r["dataset"], r["split"], r["fingerprint"]) for r in rows}
    return {"runs": rows, "same_dataset": len(datasets) == 1, "baseline": rows[0]["label"],
            "resamples": RESAMPLES}


def plot_runs(result: dict[str, Any], path: str | Path) -> None:
    """Bars per metric (left) and recall@k curves (right), one colour per run."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'llm2vec-search[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    runs = result["runs"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        xs = [j + i * width for j in range(len(BAR_METRICS))]
        bars = ax1.bar(xs, [r["metrics"][m] for m in BAR_METRICS], width, label=r["label"])
        if len(runs) <= 4:
            ax1.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
        ax2.plot(RECALL_KS, [r["metrics"][f"recall@{k}"] for k in RECALL_KS], marker="o", label=r["label"])
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(BAR_METRICS))], BAR_METRICS)
    ax1.set_ylim(0, 1.1)
    d = runs[0]
    ax1.set_title(f"{d['dataset']} / {d['split']}" + ("" if result["same_dataset"] else " (runs on different data)"))
    ax1.legend(fontsize=8, loc="upper right")
    ax2.set_xscale("log")
    ax2.set_xticks(RECALL_KS, [str(k) for k in RECALL_KS])
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("k")
    ax2.set_title("recall@k")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")  # matplotlib picks the format from the suffix
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
