"""Training throughput and peak memory: MNTP and SimCSE steps on SmolLM2-135M, LoRA vs full
fine-tuning, bf16 autocast vs fp32, measured side by side in one run (sequentially, never two
torch jobs at once).

    python benchmarks/train_bench.py --steps 5

Each variant runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_variant(stage: str, lora: bool, bf16: bool, steps: int, batch: int, seq: int) -> dict:
    import torch

    from llm2vec_search.bidirectional import set_bidirectional
    from llm2vec_search.encoder import Encoder, EncoderConfig, load_model_and_tokenizer
    from llm2vec_search.models import resolve
    from llm2vec_search.train import common
    from llm2vec_search.train.losses import InfoNCE, cached_contrastive_backward
    from llm2vec_search.train.mntp import mask_tokens, mntp_loss

    source = resolve("smollm2-135m")
    causal_lm = stage == "mntp"
    overrides = {"attention_dropout": 0.3} if stage == "simcse" else None
    model, tok = load_model_and_tokenizer(source, causal_lm=causal_lm, config_overrides=overrides)
    base = model.model if causal_lm else model
    set_bidirectional(model, True)
    if lora:
        common.add_lora(base, common.LoraConfig())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    model.train()
    g = torch.Generator().manual_seed(0)
    sentences = [" ".join(["the study of proteins in cells"] * (seq // 8)) for _ in range(batch)]
    encoder = Encoder(base, tok, EncoderConfig(max_length=seq, batch_tokens=max(8192, seq)))
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        if stage == "mntp":
            ids = torch.randint(200, 40000, (batch, seq), generator=g)
            inputs, labels = mask_tokens(ids, mask_id=79, probability=0.2, policy="bert", special_ids=set(),
                                         vocab_size=49152, generator=g)
            with common.autocast(torch.device("cpu"), bf16):
                hidden = base(input_ids=inputs).last_hidden_state
                loss = mntp_loss(hidden, labels, model.lm_head)
            loss.backward()
        else:
            views = [[(s, None) for s in sentences]] * 2

            def embed(items):
                with common.autocast(torch.device("cpu"), bf16):
                    return encoder.forward_texts([t for t, _ in items])

            cached_contrastive_backward(embed, views, InfoNCE(20.0), mini_batch=batch)
        opt.step()
        if step:  # the first step warms up kernels and allocators
            times.append(time.perf_counter() - t0)
    tokens = batch * seq * (2 if stage == "simcse" else 1)
    return {"stage": stage, "lora": lora, "bf16": bf16, "batch": batch, "seq": seq,
            "trainable_params": sum(p.numel() for p in params),
            "s_per_step": sum(times) / len(times), "tokens_per_s": tokens / (sum(times) / len(times)),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        stage, lora, bf16 = args.variant.split(",")
        batch, seq = (8, 128) if stage == "mntp" else (32, 64)
        print(json.dumps(run_variant(stage, lora == "lora", bf16 == "bf16", args.steps, batch, seq)))
        return
    rows = []
    for stage in ("mntp", "simcse"):
        for lora in ("lora", "full"):
            for dtype in ("bf16", "fp32"):
                proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--variant",
                                       f"{stage},{lora},{dtype}"], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{stage} {lora} {dtype}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'stage':7} {'params':>8} {'dtype':5} {'batch x seq':>11} {'s/step':>7} {'tok/s':>7} {'peak RSS':>9}")
    for r in rows:
        kind = "LoRA" if r["lora"] else "full"
        print(f"{r['stage']:7} {kind:>8} {'bf16' if r['bf16'] else 'fp32':5} {r['batch']:>4} x {r['seq']:<4} "
              f"{r['s_per_step']:7.2f} {r['tokens_per_s']:7.0f} {r['peak_rss_gb']:8.1f}G")
    for stage in ("mntp", "simcse"):
        by = {(r["lora"], r["bf16"]): r["tokens_per_s"] for r in rows if r["stage"] == stage}
        if (True, True) in by and (True, False) in by:
            print(f"{stage}: LoRA bf16 / LoRA fp32 = {by[(True, True)] / by[(True, False)]:.2f}x")
        if (True, True) in by and (False, True) in by:
            print(f"{stage}: LoRA bf16 / full bf16 = {by[(True, True)] / by[(False, True)]:.2f}x")


if __name__ == "__main__":
    main()
