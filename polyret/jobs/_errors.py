"""Expected failures of the synthesis jobs as one-line messages and exit codes (not jobs themselves)."""

from __future__ import annotations

import sys

from polyret.io.formats import DataError
from polyret.synthesis.llm import LLMUnreachable

EXPECTED = (LLMUnreachable, DataError, ValueError, FileNotFoundError)


def report(job: str, error: Exception) -> int:
    """Prints the error for the user; 1 when the LLM went away (rerun to resume), 2 for bad input."""
    if isinstance(error, LLMUnreachable):
        print(f"{job}: {error}\nEverything written so far is kept; run the same command again to resume.",
              file=sys.stderr)
        return 1
    print(f"{job}: {error}", file=sys.stderr)
    return 2
