"""``l2v-search models`` and ``l2v-search encode``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .. import models
from ..errors import UsageError
from .app import app, err, out
from .options import DEFAULT_MODEL, Causal, Device, Dtype, Json, MaxLength, Model, Pooling, print_json


@app.command("models")
def models_cmd(json_: Json = False) -> None:
    """List model aliases and models already in the cache.

    Example: l2v-search models --json
    """
    rows, cached = models.aliases(), models.cached_models()
    if json_:
        print_json({"aliases": rows, "cached": cached, "cache_dir": str(models.home())})
        return
    table = Table("alias", "kind", "description", title="Model aliases")
    for r in rows:
        table.add_row(r["name"] + (" (default)" if r.get("default") else ""), r["kind"], r["description"])
    out.print(table)
    table = Table("name", "type", "size", "path", title=f"Cached in {models.home()}")
    for c in cached:
        table.add_row(c["name"], str(c["model_type"]), f"{c['bytes'] / 1e6:,.0f} MB", c["path"])
    out.print(table)


@app.command("encode")
def encode_cmd(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed; '-' reads stdin, one per line.")] = None,
    model: Model = DEFAULT_MODEL,
    instruction: Annotated[str | None, typer.Option("--instruction", "-i", help="Task instruction (not pooled).")] = (
        None
    ),
    pooling: Pooling = None,
    causal: Causal = False,
    max_length: MaxLength = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Return raw pooled vectors.")] = False,
    tokens: Annotated[bool, typer.Option("--tokens", help="One vector per token (hidden states, not normalized) "
                                                          "with its character span, instead of one per text.")] = False,
    layer: Annotated[int | None, typer.Option(help="With --tokens: the hidden state returned, 0 (embeddings) to L "
                                                   "(last); negative counts from the end. Default: last.")] = None,
    json_: Json = False,
) -> None:
    """Embed texts and print the vectors (one per text, or one per token with --tokens).

    Examples:
      l2v-search encode "a cat" "a dog" --json
      l2v-search encode "Naïve café-goers" --tokens --layer 15 --json
    """
    import sys

    from ..encoder import load_encoder

    texts = list(texts or [])
    source = "text argument"
    if texts == ["-"]:
        try:
            texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        except UnicodeDecodeError:
            raise UsageError("stdin is not valid UTF-8 text") from None
        source = "stdin"
    for t in texts:
        # Under a C/POSIX locale Python decodes bad bytes (stdin, argv) to lone surrogates
        # instead of raising; the tokenizer would then fail with a TypeError.
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{source} is not valid UTF-8 text") from None
    if not texts:
        raise UsageError("no texts to encode (pass them as arguments, or '-' to read stdin)")
    if not tokens and layer is not None:
        raise UsageError("--layer applies to --tokens only (pooled vectors come from the last layer)")
    if tokens and (pooling is not None or no_normalize):
        raise UsageError("--pooling and --no-normalize do not apply to --tokens (token vectors are hidden states)")
    enc = load_encoder(model, pooling=pooling, causal=causal or None, max_length=max_length, dtype=dtype,
                       device=device, normalize=False if no_normalize else None)
    if tokens:
        _print_tokens(enc, model, texts, instruction, -1 if layer is None else layer, json_)
        return
    vectors = enc.encode(texts, instruction)
    if enc.stats.truncated:
        n, limit = enc.stats.truncated, enc.config.max_length
        err.print(f"[yellow]warning:[/yellow] {n} text(s) truncated to {limit} tokens")
    if json_:
        print_json({"model": model, "dim": enc.dim, "embeddings": vectors.tolist()})
        return
    table = Table("#", "text", "dim", "vector", title=f"{model} ({enc.config.pooling} pooling)")
    for i, (t, v) in enumerate(zip(texts, vectors)):
        preview = ", ".join(f"{x:+.4f}" for x in v[:4]) + ", ..."
        table.add_row(str(i), t[:60], str(len(v)), f"[{preview}]")
    out.print(table)


def _print_tokens(enc, model: str, texts: list[str], instruction: str | None, layer: int, json_: bool) -> None:
    from rich.markup import escape

    from ..tokens import resolve_layer

    states = enc.encode_tokens(texts, layer=layer, instruction=instruction)
    if enc.stats.windowed:
        err.print(f"note: {enc.stats.windowed} text(s) longer than {enc.config.max_length} tokens were encoded in "
                  "overlapping windows (nothing cut)", highlight=False)
    resolved = resolve_layer(enc, layer)
    if json_:
        print_json({"model": model, "dim": enc.dim, "layer": resolved, "texts": [
            {"text": s.text, "tokens": s.tokens, "spans": [list(x) for x in s.spans],
             "embeddings": s.vectors.tolist()} for s in states]})
        return
    for i, s in enumerate(states):
        table = Table("#", "token", "span", "text", "vector", title=f"text {i}: {len(s.tokens)} tokens, layer "
                      f"{resolved} ({model})")
        for j, (tok, (a, b), v) in enumerate(zip(s.tokens, s.spans, s.vectors)):
            preview = ", ".join(f"{x:+.3f}" for x in v[:4]) + ", ..."
            table.add_row(str(j), escape(repr(tok)), f"{a}:{b}", escape(repr(s.text[a:b])), escape(f"[{preview}]"))
        out.print(table)
