"""Run the official ``llm2vec`` package on a list of texts; called by encode_bench.py.

Runs inside its own virtual environment (llm2vec 0.2.3 pins transformers 4.44), so it imports
nothing from this project. Reads ``DIR/texts.json``, writes ``DIR/embeddings.npy`` and prints one
JSON line with the encoding time (model load and a warm-up batch excluded).

    python llm2vec_worker.py MODEL_DIR DIR --max-length 256 --batch-size 16 --dtype bfloat16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("dir", type=Path)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    import llm2vec
    import transformers
    from llm2vec import LLM2Vec

    texts = json.loads((a.dir / "texts.json").read_text())
    # doc_max_length >= max_length: llm2vec then truncates by tokens like the other variants,
    # not by its own word-count heuristic.
    model = LLM2Vec.from_pretrained(a.model_dir, enable_bidirectional=True, pooling_mode="mean",
                                    max_length=a.max_length, doc_max_length=a.max_length,
                                    torch_dtype=getattr(torch, a.dtype))
    kw = dict(batch_size=a.batch_size, show_progress_bar=False, convert_to_numpy=True, device="cpu")
    model.encode(texts[:8], **kw)  # warm-up
    t = time.perf_counter()
    emb = model.encode(texts, **kw)
    seconds = time.perf_counter() - t
    np.save(a.dir / "embeddings.npy", np.asarray(emb, dtype=np.float32))
    print(json.dumps({"seconds": seconds, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                      "version": getattr(llm2vec, "__version__", "0.2.3"), "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
