"""Why an ablation stage scores what it scores: anisotropy and hubness of each stage's embeddings.

Reads the corpus indexes that ``benchmarks/ablation.py`` left in ``--index-dir`` (it builds
none: run the ablation first), embeds the split's judged queries with each stage's encoder, and
prints per stage:

    doc-doc cos   mean cosine between 2,000 random chunks (1.0: every vector points the same way)
    distinct@10   distinct documents in the union of all queries' top 10 (low: the same "hub"
                  documents come first for every query), and the most lists one document is in
    nDCG@10, R@100  raw cosine (equals ``l2v-search eval``), and after subtracting the corpus
                  mean from documents and the query mean from queries ("centred")

and, for each stage after the first, a paired randomisation test of its per-query nDCG@10
against the first stage's (10,000 sign flips), plus a random ranking's nDCG@10 (chance level).

    .venv/bin/python benchmarks/hubness.py --data /work/shared/data/nfcorpus \\
        --index-dir /tmp/abl/indexes --stages bidir causal mntp simcse supervised
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ablation import stage_encoders  # noqa: E402

from llm2vec_search.corpus import read_corpus  # noqa: E402
from llm2vec_search.encoder import load_encoder  # noqa: E402
from llm2vec_search.errors import L2VError  # noqa: E402
from llm2vec_search.evaluate import eval_index_name, load_beir  # noqa: E402
from llm2vec_search.instructions import instruction_for  # noqa: E402
from llm2vec_search.metrics import run_from_rankings, score_run  # noqa: E402
from llm2vec_search.store import IndexStore, index_home, iter_shards, shard_vectors  # noqa: E402

DENSE = ("causal", "bidir", "mntp", "simcse", "supervised")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rankings(q: np.ndarray, chunks: np.ndarray, owner: np.ndarray, doc_ids: list[str], qids: list[str],
             k: int = 100) -> dict[str, list[str]]:
    """Top-k documents per query; a document scores its best chunk, as in ``SearchIndex``."""
    sims = unit(q) @ unit(chunks).T
    best = np.full((len(q), len(doc_ids)), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owner, sims.T)
    top = np.argsort(-best, axis=1)[:, :k]
    return {qid: [doc_ids[j] for j in row] for qid, row in zip(qids, top)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a BEIR folder the ablation indexed")
    p.add_argument("--split", default="test")
    p.add_argument("--index-dir", type=Path, required=True, help="the ablation's --index-dir")
    p.add_argument("--stages", nargs="+", choices=DENSE, default=["bidir", "causal", "mntp", "simcse", "supervised"],
                   help="the first is the reference of the paired tests")
    a = p.parse_args()

    queries, qrels, _ = load_beir(a.data, a.split)
    qids = list(queries)
    instruction = instruction_for(a.data.name)
    opts = stage_encoders(Path(tempfile.mkdtemp(prefix="hubness-")) / "encoders")
    per_query: dict[str, np.ndarray] = {}
    print(f"{a.data.name} {a.split}: {len(qids)} queries; instruction {instruction!r}")
    print(f"{'stage':<11} {'doc-doc cos':>11} {'distinct@10':>12} {'top hub':>8} {'nDCG@10':>8} {'R@100':>7}"
          f" {'centred nDCG@10':>16} {'R@100':>7}")
    for stage in a.stages:
        o = opts[stage]
        encoder = load_encoder(o[o.index("--model") + 1], causal=True if "--causal" in o else None)
        folder = IndexStore(index_home(a.index_dir), eval_index_name(a.data, encoder)).current()
        if folder is None:
            sys.exit(f"error: no index for {stage} in {a.index_dir}: run benchmarks/ablation.py with this --index-dir "
                     "first")
        tables = list(iter_shards(folder))
        chunks = np.concatenate([shard_vectors(t) for t in tables])
        ids = [i for t in tables for i in t.column("id").to_pylist()]
        doc_ids = sorted(set(ids))
        column = {d: j for j, d in enumerate(doc_ids)}
        owner = np.array([column[d] for d in ids])
        q = encoder.encode_queries([queries[i] for i in qids], instruction=instruction).astype(np.float32)

        sample = unit(chunks[np.random.default_rng(0).choice(len(chunks), min(2000, len(chunks)), replace=False)])
        cos = sample @ sample.T
        doc_doc = cos[~np.eye(len(cos), dtype=bool)].mean()
        raw = rankings(q, chunks, owner, doc_ids, qids)
        hubs = collections.Counter(d for r in raw.values() for d in r[:10])
        m_raw, by_query = score_run(run_from_rankings(raw), qrels)
        m_c, _ = score_run(run_from_rankings(rankings(q - q.mean(0), chunks - chunks.mean(0), owner, doc_ids, qids)),
                           qrels)
        per_query[stage] = np.array([by_query[i]["ndcg@10"] for i in qids])
        print(f"{stage:<11} {doc_doc:>11.3f} {len(hubs):>12} {hubs.most_common(1)[0][1]:>8} {m_raw['ndcg@10']:>8.4f}"
              f" {m_raw['recall@100']:>7.4f} {m_c['ndcg@10']:>16.4f} {m_c['recall@100']:>7.4f}", flush=True)

    ref, rng = a.stages[0], np.random.default_rng(0)
    for stage in a.stages[1:]:
        d = per_query[stage] - per_query[ref]
        flips = np.abs((d * rng.choice([-1.0, 1.0], (10_000, len(d)))).mean(1))
        print(f"{stage} vs {ref}: mean nDCG@10 difference {d.mean():+.4f}, paired randomisation "
              f"p = {(flips >= abs(d.mean())).mean():.3f} ({(d > 0).sum()} queries better, {(d < 0).sum()} worse)")
    docs = [r.id for r in read_corpus(a.data)]
    chance = [score_run(run_from_rankings({i: list(rng.choice(docs, 100, replace=False)) for i in qids}), qrels)[0]
              ["ndcg@10"] for _ in range(20)]
    print(f"random ranking: nDCG@10 {np.mean(chance):.4f} +- {np.std(chance):.4f} (20 draws)")


if __name__ == "__main__":
    try:
        main()
    except L2VError as e:  # bad --data or --split: one line, as the CLI reports it
        sys.exit(f"error: {e}")
