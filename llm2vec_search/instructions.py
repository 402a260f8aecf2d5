"""Task instructions for retrieval benchmarks: the query side carries one, documents none.

Wording from LLM2Vec's evaluation, McGill-NLP/llm2vec `test_configs/mteb/task_to_instructions.json`
(BehnamGhader et al., 2024, which follows E5-mistral, Wang et al., 2024), without that file's
trailing ":" (our encoder tokenizes the instruction apart from the text, so it needs no separator).
"""

from __future__ import annotations

import re

_CQA = "Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates to the " \
       "given question"
BEIR_INSTRUCTIONS = {  # BEIR folder name -> instruction
    "arguana": "Given a claim, find documents that refute the claim",
    "climate-fever": "Given a claim about climate change, retrieve documents that support or refute the claim",
    "cqadupstack": _CQA,
    "dbpedia-entity": "Given a query, retrieve relevant entity descriptions from DBPedia",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "fiqa": "Given a financial question, retrieve user replies that best answer the question",
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "msmarco": "Given a web search query, retrieve relevant passages that answer the query",
    "nfcorpus": "Given a question, retrieve relevant documents that best answer the question",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "quora": "Given a question, retrieve questions that are semantically equivalent to the given question",
    "scidocs": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper",
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "webis-touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question",
    "trec-covid": "Given a query on COVID-19, retrieve documents that answer the query",
    # Not in BEIR nor LLM2Vec's table; our wording in the same style.
    "cranfield": "Given a question about aerodynamics, retrieve scientific abstracts that answer the question",
}
# Other spellings of the same tasks (MTEB task names, short forms) -> BEIR folder name.
_ALIASES = {"climatefever": "climate-fever", "dbpedia": "dbpedia-entity", "fiqa2018": "fiqa",
            "quoraretrieval": "quora", "touche2020": "webis-touche2020", "treccovid": "trec-covid"}
DEFAULT_INSTRUCTION = "Given a question, retrieve relevant documents that best answer the question"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_TABLE = {_key(k): v for k, v in BEIR_INSTRUCTIONS.items()} | {
    _key(k): BEIR_INSTRUCTIONS[v] for k, v in _ALIASES.items()}


def instruction_for(dataset: str) -> str | None:
    """The instruction for a dataset or task name, else None.

    Case and punctuation are ignored, and a ``beir`` prefix or a ``retrieval`` suffix dropped, so
    a BEIR folder (``scifact``, ``webis-touche2020``) and an MTEB task name (``SciFact``,
    ``FiQA2018``, ``CQADupstackEnglishRetrieval``) both work.
    """
    key = _key(dataset).removeprefix("beir")
    for candidate in (key, key.removesuffix("retrieval")):
        if candidate in _TABLE:
            return _TABLE[candidate]
    return _CQA if key.startswith("cqadupstack") else None
