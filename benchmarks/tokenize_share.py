"""How much of indexing is tokenization? (issue 21 item 1: "tokenize once")

Indexing tokenizes each document twice: `embed.chunk_documents` tokenizes it with offsets to cut
token windows, and the encoder tokenizes each window's text again. This times both over a whole
corpus, and the forward pass on a sample of the same windows in the same run, and prints the
share of the (extrapolated) forward time that the two tokenizations take.

    .venv/bin/python benchmarks/tokenize_share.py --data ../shared/data/scifact --sample 96
"""

from __future__ import annotations

import argparse
import random
import time

from llm2vec_search.corpus import read_corpus
from llm2vec_search.embed import ChunkConfig, chunk_documents
from llm2vec_search.encoder import load_encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a BEIR folder or any corpus file index reads")
    p.add_argument("--model", default="llm2vec-smollm2-135m")
    p.add_argument("--sample", type=int, default=96, help="windows embedded to measure the forward's tokens/s")
    a = p.parse_args()

    enc = load_encoder(a.model)
    docs = [r.content for r in read_corpus(a.data)]
    instruction = enc.config.document_instruction or None
    t = time.perf_counter()
    spans = chunk_documents(enc, docs, ChunkConfig())
    chunking = time.perf_counter() - t
    windows = [d[s:e] for d, sp in zip(docs, spans) for s, e in sp]
    t = time.perf_counter()
    seqs, _ = enc.tokenize(windows, instruction)
    again = time.perf_counter() - t
    tokens = sum(len(s) for s in seqs)

    sample = random.Random(0).sample(windows, min(a.sample, len(windows)))
    enc.encode(sample[:8], instruction)  # warm-up
    before = enc.stats.tokens
    t = time.perf_counter()
    enc.encode(sample, instruction)
    rate = (enc.stats.tokens - before) / (time.perf_counter() - t)
    forward = tokens / rate
    print(f"{len(docs):,} documents, {len(windows):,} windows, {tokens:,} tokens ({enc.dtype})")
    print(f"tokenize for chunking {chunking:.2f} s | tokenize windows again {again:.2f} s | "
          f"encode {rate:,.0f} tokens/s -> whole corpus ~{forward:,.0f} s")
    print(f"both tokenizations: {100 * (chunking + again) / forward:.2f}% of the forward; "
          f"the second alone: {100 * again / forward:.2f}%")


if __name__ == "__main__":
    main()
