"""Training throughput and peak memory: MNTP, SimCSE and supervised steps on SmolLM2-135M, LoRA vs
full fine-tuning, bf16 autocast vs fp32, measured side by side in one run (sequentially, never two
torch jobs at once).

    python benchmarks/train_bench.py --steps 5
    python benchmarks/train_bench.py --steps 2 --stages supervised --seqs 128 256

Supervised: 32 (query, positive, hard negative) triplets a step, mini-batch 32, cached loss.

Each variant runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_variant(stage: str, params_kind: str, bf16: bool, steps: int, batch: int, seq: int) -> dict:
    """One variant; ``params_kind``: lora (r=16, dropout 0.05), lora0 (dropout 0) or full."""
    import torch

    from llm2vec_search.bidirectional import set_bidirectional
    from llm2vec_search.encoder import Encoder, EncoderConfig
    from llm2vec_search.models import load_model_and_tokenizer, resolve
    from llm2vec_search.train import common
    from llm2vec_search.train.losses import InfoNCE, cached_contrastive_backward
    from llm2vec_search.train.mntp import mask_tokens, mntp_loss

    source = resolve("smollm2-135m")
    causal_lm = stage == "mntp"
    overrides = {"attention_dropout": 0.3} if stage == "simcse" else None
    model, tok = load_model_and_tokenizer(source, causal_lm=causal_lm, config_overrides=overrides)
    base = model.model if causal_lm else model
    set_bidirectional(model, True)
    if params_kind != "full":
        # lora dropout keeps a dropped-out copy of every adapted input for the backward pass
        common.add_lora(base, common.LoraConfig(dropout=0.0 if params_kind == "lora0" else 0.05))
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
            views = [[(s, None) for s in sentences]] * (3 if stage == "supervised" else 2)

            def embed(items):
                with common.autocast(torch.device("cpu"), bf16):
                    return encoder.forward_texts([t for t, _ in items])

            cached_contrastive_backward(embed, views, InfoNCE(20.0), mini_batch=batch)
        opt.step()
        if step:  # the first step warms up kernels and allocators
            times.append(time.perf_counter() - t0)
    tokens = batch * seq * {"mntp": 1, "simcse": 2, "supervised": 3}[stage]
    return {"stage": stage, "params": params_kind, "bf16": bf16, "batch": batch, "seq": seq,
            "trainable_params": sum(p.numel() for p in params),
            "s_per_step": sum(times) / len(times), "tokens_per_s": tokens / (sum(times) / len(times)),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--stages", nargs="+", default=["mntp", "simcse"], choices=["mntp", "simcse", "supervised"])
    ap.add_argument("--params", nargs="+", default=["lora", "full"], choices=["lora", "lora0", "full"],
                    help="lora: r=16, dropout 0.05; lora0: dropout 0; full: every weight")
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--seqs", nargs="+", type=int, default=None,
                    help="tokens per text (default: 128 for MNTP and supervised, 64 for SimCSE)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        stage, kind, dtype, seq = args.variant.split(",")
        batch = 8 if stage == "mntp" else 32
        print(json.dumps(run_variant(stage, kind, dtype == "bf16", args.steps, batch, int(seq))))
        return
    print(f"{'stage':10} {'params':>6} {'dtype':5} {'batch x seq':>11} {'s/step':>7} {'tok/s':>7} {'peak RSS':>9}",
          flush=True)
    rows = []
    for stage in args.stages:
        for seq in args.seqs or [64 if stage == "simcse" else 128]:
            for kind in args.params:
                for dtype in args.dtypes:
                    proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--variant",
                                           f"{stage},{kind},{dtype},{seq}"], capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"{stage} {kind} {dtype} {seq}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    rows.append(r)
                    print(f"{r['stage']:10} {r['params']:>6} {dtype:5} {r['batch']:>4} x {r['seq']:<4} "
                          f"{r['s_per_step']:7.2f} {r['tokens_per_s']:7.0f} {r['peak_rss_gb']:8.1f}G", flush=True)
    for stage in args.stages:
        by = {(r["params"], r["bf16"], r["seq"]): r["tokens_per_s"] for r in rows if r["stage"] == stage}
        for (kind, bf16, seq), rate in sorted(by.items()):
            if kind != "lora" and ("lora", bf16, seq) in by:
                dt = "bf16" if bf16 else "fp32"
                print(f"{stage} seq {seq} {dt}: {kind} / lora = {rate / by[('lora', bf16, seq)]:.2f}x")
            if bf16 and (kind, False, seq) in by:
                print(f"{stage} seq {seq} {kind}: bf16 / fp32 = {rate / by[(kind, False, seq)]:.2f}x")


if __name__ == "__main__":
    main()
