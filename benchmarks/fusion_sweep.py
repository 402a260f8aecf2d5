"""Choose the hybrid fusion on validation splits: RRF and convex combinations (alpha 0..1) of a
dense and a BM25 run, scored against the split's qrels, per dataset and on the mean.

Each dataset is a pair of `l2v-search eval --out` folders over the same split, one `--mode dense`
and one `--mode bm25` (their `run.trec` holds each side's scores); fusing each side's top 100 here
is exactly what `query -k 10` does (`llm2vec_search.fusion.fuse`). Only nDCG@10 is scored.

    python benchmarks/fusion_sweep.py runs/fusion/squad-val-{dense,bm25} runs/fusion/cranfield-val-{dense,bm25} \\
        runs/fusion/scifact-val-{dense,bm25} runs/fusion/nfcorpus-dev-{dense,bm25} [--json out.json]

The rule printed at the end (set before looking at any test split): the fusion with the best mean
nDCG@10 over the validation datasets among those that are never more than 0.01 below BM25 on any
of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from llm2vec_search.evaluate import load_beir
from llm2vec_search.fusion import Fusion, fuse
from llm2vec_search.metrics import run_from_rankings, score_run
from llm2vec_search.search import HYBRID_DEPTH

ALPHAS = [round(0.1 * i, 1) for i in range(11)]


def read_run(folder: Path) -> dict[str, list[tuple[str, float, None]]]:
    """``run.trec`` as {qid: [(doc, score, None)] in rank order}."""
    ranked: dict[str, list[tuple[str, float, None]]] = defaultdict(list)
    for line in (folder / "run.trec").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        ranked[qid].append((doc, float(score), None))
    return ranked


def ndcg(rankings: dict[str, list[str]], qrels) -> float:
    """nDCG@10 as ``eval`` scores it (rank order, every judged query counts); only each ranking's
    top 10 matters, so only that is scored."""
    return score_run(run_from_rankings({q: r[:10] for q, r in rankings.items()}), qrels)[0]["ndcg@10"]


def sweep(dense_dir: Path, bm25_dir: Path) -> dict[str, float]:
    meta = json.loads((dense_dir / "metrics.json").read_text())
    other = json.loads((bm25_dir / "metrics.json").read_text())
    if (meta["dataset"]["fingerprint"], meta["dataset"]["split"]) != (other["dataset"]["fingerprint"],
                                                                       other["dataset"]["split"]):
        raise SystemExit(f"error: {dense_dir} and {bm25_dir} are not runs on the same dataset and split")
    _, qrels, _ = load_beir(meta["dataset"]["path"], meta["dataset"]["split"])
    dense, sparse = read_run(dense_dir), read_run(bm25_dir)
    out = {"dense": ndcg({q: [d for d, _, _ in r] for q, r in dense.items()}, qrels),
           "bm25": ndcg({q: [d for d, _, _ in r] for q, r in sparse.items()}, qrels)}
    fusions = {"rrf": Fusion("rrf")} | {f"convex {a:.1f}": Fusion("convex", alpha=a) for a in ALPHAS}
    for name, f in fusions.items():
        # what `query -k 10` fuses: each side's top HYBRID_DEPTH
        fused = {q: [d for d, _, _ in fuse(dense.get(q, [])[:HYBRID_DEPTH], sparse.get(q, [])[:HYBRID_DEPTH], f)[:10]]
                 for q in qrels}
        out[name] = ndcg(fused, qrels)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="pairs: DENSE_DIR BM25_DIR per dataset")
    ap.add_argument("--json", type=Path, help="write the table as JSON")
    args = ap.parse_args()
    if len(args.runs) % 2:
        print("error: give the runs in pairs (dense, bm25)", file=sys.stderr)
        return 2
    table = {}
    for dense_dir, bm25_dir in zip(args.runs[0::2], args.runs[1::2]):
        meta = json.loads((dense_dir / "metrics.json").read_text())
        table[f"{meta['dataset']['name']}/{meta['dataset']['split']}"] = sweep(dense_dir, bm25_dir)
    names = list(next(iter(table.values())))
    print(f"{'nDCG@10':14}" + "".join(f"{d[:18]:>20}" for d in table) + f"{'mean':>9}{'worst vs BM25':>15}")
    ok = {}
    for n in names:
        values = [table[d][n] for d in table]
        worst = min(table[d][n] - table[d]["bm25"] for d in table)
        mean = sum(values) / len(values)
        if n not in ("dense", "bm25") and worst >= -0.01:
            ok[n] = mean
        print(f"{n:14}" + "".join(f"{v:20.4f}" for v in values) + f"{mean:9.4f}{worst:+15.4f}")
    if ok:
        best = max(ok, key=ok.get)
        print(f"\nchosen (best mean among fusions never > 0.01 below BM25): {best} (mean {ok[best]:.4f})")
    else:
        print("\nno fusion stays within 0.01 of BM25 on every dataset")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
