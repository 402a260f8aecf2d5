"""Task instructions for retrieval benchmarks: the query side carries one, documents none.

Wording from LLM2Vec's evaluation (BehnamGhader et al., 2024, appendix table of MTEB
instructions), which follows E5-mistral (Wang et al., 2024).
"""

from __future__ import annotations

BEIR_INSTRUCTIONS = {
    "arguana": "Given a claim, find documents that refute the claim",
    "climate-fever": "Given a claim about climate change, retrieve documents that support or refute the claim",
    "cqadupstack": "Given a question, retrieve detailed question descriptions from Stackexchange that are "
                   "duplicates to the given question",
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
    "touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question",
    "trec-covid": "Given a query on COVID-19, retrieve documents that answer the query",
    # Not in BEIR; same style.
    "cranfield": "Given a question about aerodynamics, retrieve scientific abstracts that answer the question",
}
DEFAULT_INSTRUCTION = "Given a question, retrieve relevant documents that best answer the question"


def instruction_for(dataset: str) -> str | None:
    """The instruction for a dataset name (case-insensitive; folder names like ``scifact`` work)."""
    return BEIR_INSTRUCTIONS.get(dataset.lower().removeprefix("beir-").removeprefix("beir_"))
