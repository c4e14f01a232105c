"""The one output sink: results to stdout, progress/warnings/errors/hints to stderr (huggingface_hub's idea).

Library code that wants to tell the user something takes an :class:`Output`; tests pass ``Output(quiet=True)``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


class Output:
    """Where every message of a command goes.

    Args:
        quiet: Drop progress and informational messages (results and errors still print).
        as_json: Results are printed as JSON by the caller; informational text goes to stderr only.
    """

    def __init__(self, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet = quiet
        self.as_json = as_json
        self.stdout = Console(soft_wrap=True)
        self.stderr = Console(stderr=True, soft_wrap=True)

    # Text is printed verbatim (markup and emoji codes off): messages carry the user's own paths and values,
    # and rich would read a folder named ``[/x]`` as a closing tag (MarkupError) or ``:x:`` as an emoji.
    def result(self, renderable: Any) -> None:
        """A command's result (stdout): a string verbatim (JSON stays JSON), or a rich renderable (tables)."""
        if isinstance(renderable, str):
            self.stdout.print(renderable, markup=False, emoji=False)
        else:
            self.stdout.print(renderable)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(message, markup=False, emoji=False)

    def warn(self, message: str) -> None:
        self.stderr.print(Text.assemble(("warning:", "yellow"), " ", message), emoji=False)

    def error(self, message: str) -> None:
        self.stderr.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, emoji=False)

    def progress(self, *columns: Any, **kwargs: Any):
        """A rich Progress on stderr, disabled when quiet."""
        from rich.progress import Progress

        return Progress(*columns, console=self.stderr, disable=self.quiet, **kwargs)
