"""The ``l2v-search`` command line: a thin Typer layer over the library.

Each command validates its input, makes one library call, and prints a rich table for people
or JSON (``--json``) for programs. Progress and logs go to stderr. Errors the user can fix
(:class:`~llm2vec_search.errors.L2VError`) become one ``error: ...`` line and a non-zero exit.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from rich.markup import escape

from ..errors import L2VError
from .app import err, out  # noqa: F401 (re-exported)

# Command name -> the module that registers it on the app, in the order `--help` lists them.
COMMANDS = {"models": "encode", "encode": "encode", "index": "index", "remove": "index", "indexes": "index",
            "query": "query", "serve": "serve", "train": "train", "eval": "eval"}


def load_commands(argv: list[str] | None = None):
    """Import the command modules (each registers itself on the app) and return the app.

    Given ``argv``, only the module of the command it names is imported, so that ``l2v-search
    query`` does not pay for the training, evaluation and encoding commands' imports; without a
    known command name (``--help``, a typo) every command is loaded.
    """
    from .app import app

    name = argv[1] if argv and len(argv) > 1 else None
    modules = [COMMANDS[name]] if name in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")
    return app


def __getattr__(name: str):
    """``llm2vec_search.cli.app``: the Typer app with every command registered."""
    if name == "app":
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rc = load_commands(sys.argv)(standalone_mode=False)
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
