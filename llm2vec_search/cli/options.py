"""Options shared by several commands, so each name means the same thing everywhere."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..models import DEFAULT_ENCODER

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
Dtype = Annotated[str, typer.Option(help="auto | bf16 | fp32 | fp16 (auto: bf16 where fast).")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
