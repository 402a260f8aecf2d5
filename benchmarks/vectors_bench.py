"""Quantized vectors against float on one collection: resident index memory, search QPS and
nDCG@10 retained (issue 21 item 3).

Reads a float index that ``l2v-search index DATA --name NAME`` built (any encoder; the targets are
for the default one) and its BEIR folder, embeds the split's judged queries once with the index's
encoder, then makes the int8 and binary versions of the index from the float vectors in its shards
(``vectors.requantize``: nothing is re-embedded, so a collection costs one corpus encoding) in a
temporary index home that holds links to the index's files (the index itself is not changed).
Every variant is searched with the same query vectors through ``SearchIndex.search_embedded``
(dense mode):

    float              the index as built
    int8 +rescore xM   SQ8 codes; the top 10 x M candidates rescored with the float vectors
    binary +rescore xM sign bits (BFlat, Hamming; documents centred on their mean); the top 10 x M rescored
    binary, no rescore the same codes in their own order (M = 0), for reference
    plain signs +rescore xM  documents' codes without centring (BFlat only), for reference: what
                       the centring in vectors.py buys on this collection

Columns:
    index MB   resident index memory: the bytes of the FAISS index as faiss serializes it, which for
               Flat, SQ8 and BFlat is its codes array (n x code size) plus a header of a few hundred
               bytes, i.e. what ``read_index`` allocates. The float vectors that rescoring reads
               (``vectors.npy``, "mapped MB") stay on disk, memory-mapped: only the candidates' pages
               are read, into the page cache, and they are not counted.
    x less     float's index MB / this variant's
    QPS        queries per second of the search step alone (vectors already computed: FAISS, the
               rescoring, the best window per document, the hits' text), one query per call, best of
               --repeats passes over all queries; "QPS batch": all queries in one call
    nDCG@10    pytrec_eval (``metrics.score_run``), the queries and qrels ``l2v-search eval --mode
               dense`` uses; "retained" = this / float's

    l2v-search index /work/shared/data/scifact --name scifact            # once: the float index
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/vectors_bench.py --index scifact \\
        --index-dir indexes --data /work/shared/data/scifact --split test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llm2vec_search.evaluate import load_beir
from llm2vec_search.instructions import instruction_for
from llm2vec_search.manifest import write_json_atomic
from llm2vec_search.metrics import run_from_rankings, score_run
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import BM25_DIR, CURRENT, FAISS_FILE, MANIFEST, READERS, VECTORS_FILE, index_home
from llm2vec_search.vectors import binarize, code_bits, requantize


def index_bytes(index) -> int:
    """The FAISS index's serialized size: for Flat, SQ8 and BFlat, its codes plus a small header."""
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).nbytes)
    return int(faiss.serialize_index(index).nbytes)


def linked_copy(idx: SearchIndex, home: Path) -> None:
    """Index ``idx.name`` in ``home``: its published generation with every file the pipeline reads
    hard-linked (copied across filesystems), a fresh reader file, and a manifest without BM25 (the
    variants are searched dense only, so requantizing does not rebuild BM25). Files are only ever
    replaced by rename, never written in place, so the original index is not touched."""
    src, dst = idx.folder, home / idx.name / idx.folder.name
    skip = {FAISS_FILE, BM25_DIR, READERS, MANIFEST}
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if rel.parts[0] in skip or path.is_dir():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dst / rel)
        except OSError:
            shutil.copy2(path, dst / rel)
    (dst / READERS).touch()
    write_json_atomic(dst / MANIFEST, {**idx.manifest.as_dict(), "bm25": False})
    (home / idx.name / CURRENT).write_text(dst.name + "\n", encoding="utf-8")


def measure(label: str, idx: SearchIndex, xq: np.ndarray, texts: list[str], qids: list[str], qrels, *,
            multiplier: int | None, k: int, repeats: int) -> dict:
    kw = {} if multiplier is None else {"rescore_multiplier": multiplier}
    hits = idx.search_embedded(xq, texts, k, mode="dense", **kw)  # also warms FAISS and the mapped pages
    ndcg = score_run(run_from_rankings({q: [h.id for h in r] for q, r in zip(qids, hits)}), qrels)[0]["ndcg@10"]
    one = batch = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(texts)):
            idx.search_embedded(xq[i:i + 1], texts[i:i + 1], k, mode="dense", **kw)
        one = min(one, time.perf_counter() - t)
        t = time.perf_counter()
        idx.search_embedded(xq, texts, k, mode="dense", **kw)
        batch = min(batch, time.perf_counter() - t)
    mapped = idx.folder / VECTORS_FILE
    return {"variant": label, "factory": idx.manifest.faiss.factory, "index_bytes": index_bytes(idx.faiss),
            "mapped_bytes": mapped.stat().st_size if mapped.exists() else 0, "qps": len(texts) / one,
            "qps_batch": len(texts) / batch, "ndcg@10": ndcg}


def plain_signs(variant: SearchIndex) -> None:
    """Give a BFlat index opened for searching the documents' plain signs (no centring) as codes,
    made from its vectors.npy; queries are coded as before (plain signs)."""
    import faiss

    xb = np.load(variant.folder / VECTORS_FILE, mmap_mode="r")
    index = faiss.IndexBinaryFlat(code_bits(xb.shape[1]))
    for start in range(0, len(xb), 65536):
        index.add(binarize(xb[start:start + 65536]))
    variant._faiss = variant._rescorer.index = index  # the rescorer searches these codes from now on


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = [f"{'variant':<24} {'factory':<8} {'index MB':>9} {'x less':>7} {'mapped MB':>10} {'QPS':>8} "
             f"{'QPS batch':>10} {'nDCG@10':>8} {'retained':>9}"]
    for r in rows:
        lines.append(f"{r['variant']:<24} {r['factory']:<8} {r['index_bytes'] / 2**20:>9.2f} "
                     f"{base['index_bytes'] / r['index_bytes']:>7.1f} {r['mapped_bytes'] / 2**20:>10.2f} "
                     f"{r['qps']:>8.0f} {r['qps_batch']:>10.0f} {r['ndcg@10']:>8.4f} "
                     f"{r['ndcg@10'] / base['ndcg@10'] if base['ndcg@10'] else float('nan'):>9.3f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="a float index built from --data")
    p.add_argument("--index-dir", default=None, help="its index home (default $L2V_SEARCH_INDEX_DIR or ./indexes)")
    p.add_argument("--data", type=Path, required=True, help="the BEIR folder the index was built from")
    p.add_argument("--split", default="test")
    p.add_argument("--instruction", default=None, help="query instruction (default: the dataset's, as eval)")
    p.add_argument("--multipliers", default="4", help="rescore multipliers to measure, e.g. 2,4,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="FAISS (OpenMP) threads")
    p.add_argument("--work", default=None, help="where the temporary index home goes (default: the system's)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    a = p.parse_args()

    import faiss

    faiss.omp_set_num_threads(a.threads)
    idx = SearchIndex.open(a.index, index_home(a.index_dir))
    info = idx.manifest.faiss
    if info is None or info.vector_type != "float" or info.on_disk:
        sys.exit(f"error: index {a.index!r} is not an in-memory float index (faiss: {info})")
    queries, qrels, _ = load_beir(a.data, a.split)
    qids = list(queries)
    texts = [queries[q] for q in qids]
    instruction = a.instruction if a.instruction is not None else instruction_for(a.data.name)
    t = time.perf_counter()
    xq = idx.load_encoder().encode_queries(texts, instruction)
    print(f"{len(texts)} queries embedded once in {time.perf_counter() - t:.1f}s; {info.vectors} vectors "
          f"({idx.manifest.encoder['dim']}-d), instruction {instruction!r}", file=sys.stderr)
    opts = dict(k=10, repeats=a.repeats)
    rows = [measure("float", idx, xq, texts, qids, qrels, multiplier=None, **opts)]
    multipliers = [int(m) for m in a.multipliers.split(",")]
    with tempfile.TemporaryDirectory(prefix="vectors-bench-", dir=a.work) as tmp:
        home = Path(tmp)
        linked_copy(idx, home)
        for vector_type in ("int8", "binary"):
            t = time.perf_counter()
            requantize(a.index, home, vector_type)
            print(f"{vector_type}: built from the shards in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            variant = SearchIndex.open(a.index, home)
            for m in multipliers:
                rows.append(measure(f"{vector_type} +rescore x{m}", variant, xq, texts, qids, qrels, multiplier=m,
                                    **opts))
            if vector_type == "binary":
                rows.append(measure("binary, no rescore", variant, xq, texts, qids, qrels, multiplier=0, **opts))
                if variant.manifest.faiss.factory == "BFlat":
                    plain_signs(variant)
                    for m in multipliers:
                        rows.append(measure(f"plain signs +rescore x{m}", variant, xq, texts, qids, qrels,
                                            multiplier=m, **opts))
            variant.close()
    print(f"{a.data.name} / {a.split}: {len(texts)} queries, dense, FAISS threads {a.threads}")
    print(table(rows))
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
