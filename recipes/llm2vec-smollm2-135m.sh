#!/usr/bin/env bash
# Reproduces the shipped default encoder `llm2vec-smollm2-135m` on a 2-core CPU (bf16 autocast).
# Data: ../shared/data (see its README). Each stage resumes with --resume after an interruption.
set -euo pipefail
DATA=${DATA:-../shared/data}
L2V=${L2V:-.venv/bin/l2v-search}

# 1+2. Bidirectional attention + masked next-token prediction (LoRA r=16 on all projections).
$L2V train mntp --model smollm2-135m --data "$DATA/wiki_en_partial/paragraphs.txt.gz" --output runs/mntp \
  --steps 600 --batch-size 8 --lr 2e-4 --warmup-steps 30 --max-seq-length 128 --eval-blocks 64 \
  --eval-every 100 --save-every 50 --max-passages 60000 "$@"

# 3. Unsupervised SimCSE on Wikipedia sentences (attention dropout 0.3, temperature 0.05, new LoRA).
$L2V train simcse --model runs/mntp/encoder --data "$DATA/wiki_en_partial/sentences.txt.gz" --output runs/simcse \
  --steps 100 --batch-size 64 --mini-batch 64 --lr 1e-4 --warmup-steps 10 --max-length 64 \
  --max-sentences 200000 --save-every 20
