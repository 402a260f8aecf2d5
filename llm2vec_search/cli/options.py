"""Options shared by several commands, so each name means the same thing everywhere."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..names import DEFAULT_ENCODER

Model = Annotated[
    str,
    typer.Option("--model", "-m", help="Alias, local directory, .gguf file, encoder directory or hub id."),
]
DEFAULT_MODEL = DEFAULT_ENCODER
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
Pooling = Annotated[
    str | None, typer.Option(help="mean | weighted_mean | eos | bos (default: the encoder's).")
]
Causal = Annotated[bool, typer.Option("--causal", help="Keep causal attention (the paper's 'Uni' baseline).")]
MaxLength = Annotated[int | None, typer.Option(help="Tokens per sequence (default: the encoder's).")]
Dtype = Annotated[str, typer.Option(help="auto | bf16 | fp32 | fp16 | int8 (auto: bf16 where it measures faster; "
                                     "int8: ONNX Runtime on the CPU, extra `int8`).")]
QueryDtype = Annotated[str | None, typer.Option(
    "--dtype", help="Encode queries in this dtype (default: the index's: int8 for an index built with "
    "--dtype int8, else auto); another kind than the index's is reported.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]
Mode = Annotated[str | None, typer.Option(
    help="dense | bm25 | hybrid (default: hybrid where the index has BM25 and vectors).")]
FusionMethod = Annotated[str | None, typer.Option(
    "--fusion", help="Hybrid fusion: convex (weighted normalized scores) | rrf (reciprocal rank). Default: convex.")]
Alpha = Annotated[float | None, typer.Option(help="Convex fusion: the dense side's weight in [0, 1].")]
RescoreMultiplier = Annotated[int | None, typer.Option(
    help="int8/binary indexes: rescore the top k x M candidates with the float vectors (0: none; "
         "default: the index's, 4 unless built otherwise).")]


def make_fusion(method: str | None, alpha: float | None):
    """The fusion the options ask for (the defaults where they are None); bad values are one error line."""
    import dataclasses

    from ..errors import UsageError
    from ..fusion import DEFAULT_FUSION

    if alpha is not None and (method or DEFAULT_FUSION.method) != "convex":
        raise UsageError("--alpha applies to --fusion convex only")
    changes = {k: v for k, v in (("method", method), ("alpha", alpha)) if v is not None}
    return dataclasses.replace(DEFAULT_FUSION, **changes) if changes else DEFAULT_FUSION


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
