"""The training loop end to end on the tiny test model: seconds for MNTP and supervised steps,
including checkpoints and pruning (compare two checkouts one after the other).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/loop_bench.py /tmp/loop-bench 10
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import WORDS, make_tiny_model  # noqa: E402

from llm2vec_search.train import data as D  # noqa: E402
from llm2vec_search.train.mntp import MNTPConfig, train_mntp  # noqa: E402
from llm2vec_search.train.supervised import SupervisedConfig, train_supervised  # noqa: E402


def main(root: Path, steps: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    model = root / "tiny"
    if not model.exists():
        make_tiny_model(model)
    rng = random.Random(0)
    text = root / "text.txt"
    text.write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(8, 30))) for _ in range(400)))
    cfg = MNTPConfig(model=str(model), data=str(text), output=str(root / "mntp"), steps=steps, batch_size=4,
                     max_seq_length=32, lr=3e-3, warmup_steps=2, eval_blocks=8, eval_every=10, save_every=5,
                     keep_checkpoints=10, device="cpu", bf16=False)
    t0 = time.perf_counter()
    train_mntp(cfg, quiet=True)
    t_mntp = time.perf_counter() - t0
    rng = random.Random(1)
    examples = tuple(D.Example(" ".join(rng.choices(WORDS, k=5)), " ".join(rng.choices(WORDS, k=12)),
                               " ".join(rng.choices(WORDS, k=12))) for _ in range(40))
    scfg = SupervisedConfig(model=str(model), output=str(root / "sup"), steps=steps, batch_size=8, mini_batch=4,
                            max_length=48, device="cpu", bf16=False, save_every=5, keep_checkpoints=10)
    t0 = time.perf_counter()
    train_supervised(scfg, [D.Source("toy", examples, "search")], quiet=True)
    print(json.dumps({"mntp_s": round(t_mntp, 2), "supervised_s": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
