"""The ``l2v-search`` command line: a thin Typer layer over the library.

Each command validates its input, makes one library call, and prints a rich table for people
or JSON (``--json``) for programs. Progress and logs go to stderr. Errors the user can fix
(:class:`~llm2vec_search.errors.L2VError`) become one ``error: ...`` line and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import L2VError

app = typer.Typer(
    name="l2v-search",
    help="LLM2Vec encoders and semantic search: train, encode, index, query, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)  # progress, logs, errors
out = Console()  # results for people (tables)

# Command modules register themselves on `app` when imported.
from . import encode  # noqa: E402,F401
from . import train  # noqa: E402,F401
from . import index  # noqa: E402,F401
from . import query  # noqa: E402,F401
from . import eval  # noqa: E402,F401
from . import serve  # noqa: E402,F401


def main() -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rc = app(standalone_mode=False)
    except L2VError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "[int8]" is not markup
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as e:  # click's own usage errors, and anything unexpected
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        if os.environ.get("L2V_SEARCH_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        err.print(f"[red]error:[/red] {type(e).__name__}: {escape(first)} (set L2V_SEARCH_DEBUG=1 for a traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
