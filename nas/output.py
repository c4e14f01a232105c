"""The one output sink: results to stdout, progress/warnings/errors/hints to stderr (huggingface_hub's idea).

Library code that wants to tell the user something takes an :class:`Output`; tests pass ``Output(quiet=True)``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


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

    def result(self, renderable: Any) -> None:
        """A command's result (stdout)."""
        self.stdout.print(renderable)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(message)

    def warn(self, message: str) -> None:
        self.stderr.print(f"[yellow]warning:[/] {message}")

    def error(self, message: str) -> None:
        self.stderr.print(f"[bold red]error:[/] {message}", highlight=False)

    def progress(self, *columns: Any, **kwargs: Any):
        """A rich Progress on stderr, disabled when quiet."""
        from rich.progress import Progress

        return Progress(*columns, console=self.stderr, disable=self.quiet, **kwargs)
