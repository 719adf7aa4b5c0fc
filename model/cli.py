"""The models' `hdvg` subcommands. Parsers only: each handler imports torch, diffusers and the model code
when it runs, so `hdvg curate` on a curation node never needs the model stack."""
from __future__ import annotations

import argparse
from typing import Callable

Handler = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the model commands to `hdvg`'s subparsers; return their handlers by command name."""
    handlers: dict[str, Handler] = {}
    return handlers
