"""The paper's ablation for the shipped encoder: nDCG@10 after each LLM2Vec stage, on full test sets.

Stages, each evaluated by ``l2v-search eval`` (a fresh process, the same code users run):

    causal      SmolLM2-135M as it is, causal attention, mean pooling (the paper's "Uni")
    bidir       bidirectional attention, no training
    mntp        + the shipped MNTP adapter
    simcse      + the shipped SimCSE adapter
    supervised  + the shipped supervised adapter (= the default encoder ``llm2vec-smollm2-135m``)
    bm25        the sparse reference
    hybrid      the default encoder and BM25 fused by reciprocal rank fusion (``--mode hybrid``)

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
STAGES = ("causal", "bidir", "mntp", "simcse", "supervised", "bm25", "hybrid")


def stage_adapters() -> dict[str, list[str]]:
    """For every stage, the hashes of the shipped adapters it uses: a result stays valid while they
    do (a new supervised adapter makes only the supervised and hybrid rows stale)."""
    shipped = packaged_encoders()[DEFAULT_ENCODER]
    names = json.loads((shipped / "manifest.json").read_text())["adapters"]
    hashes = [sha256_file(shipped / a / "adapter_model.safetensors")[:16] for a in names]
    out = {"causal": [], "bidir": [], "bm25": [], "hybrid": hashes}
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
    p.add_argument("--stages", nargs="+", default=["supervised", "bm25", "hybrid", "causal", "bidir", "mntp", "simcse"],
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
                row = {"stage": stage, "dataset": data.name, "split": a.split, "adapters": adapters[stage],
                       **run(data, a.split, opts[stage], index_dir)}
                print(json.dumps(row), file=sys.stderr)
                with a.save.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    print(table(done, datasets, adapters))


if __name__ == "__main__":
    main()
