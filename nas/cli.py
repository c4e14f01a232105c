"""The ``nas`` command line: the typer app, its commands' registration, and the mapping of errors to exit codes.

Each command's body lives in :mod:`nas.commands` (one module per command or group); it parses with typer,
calls one library function and prints. Heavy modules are imported inside each command so ``nas --help``
stays instant. A user mistake (:class:`NasUserError`) prints one red line and exits 1; Ctrl-C exits 130;
anything else is a crash and keeps its traceback. ``NAS_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys

import typer

from nas.commands import bench, catalog, report, search, select, status, tuning
from nas.errors import NasUserError
from nas.output import Output

app = typer.Typer(
    name="nas",
    help="lightnas: find small, fast language models for your hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(help="Hardware profiles: list them, show one.", invoke_without_command=True)
app.add_typer(profiles_app, name="profiles")
space_app = typer.Typer(help="Search spaces: list them, show one with its size.", invoke_without_command=True)
app.add_typer(space_app, name="space")

# Registration order is the order of 'nas --help'.
app.command(epilog=search.SEARCH_EXAMPLES)(search.search)
app.command()(search.resume)
app.command()(status.status)
profiles_app.callback()(catalog.profiles_list)
profiles_app.command("show")(catalog.profiles_show)
space_app.callback()(catalog.space_list)
space_app.command("show", epilog=catalog.SPACE_EXAMPLES)(catalog.space_show)
app.command(epilog=report.REPORT_EXAMPLES)(report.report)
app.command(epilog=select.SELECT_EXAMPLES)(select.select)
app.command(epilog=bench.BENCH_EXAMPLES)(bench.bench)
app.command(epilog=tuning.TUNE_EXAMPLES)(tuning.tune)
app.command(epilog=tuning.CALIBRATE_EXAMPLES)(tuning.calibrate)


def main() -> None:
    """Entry point of the ``nas`` console script: map known errors to exit codes."""
    out = Output()
    warnings_on_one_line(out)
    try:
        # Without standalone mode, typer turns Ctrl-C into Exit(130) and *returns* that code: pass it on,
        # or `nas search && nas select` would carry on after an interrupted search.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except NasUserError as exc:
        if os.environ.get("NAS_DEBUG") == "1":
            raise
        _print_error(out, str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer vendors click as typer._click): exit 2
        if hasattr(exc, "show"):
            exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    except PermissionError as exc:  # a read-only folder or file the command must write (report, select)
        _print_error(out, f"cannot write {exc.filename or 'a file'} ({exc.strerror}); make it writable or choose "
                          "another --out/--export-dir.")
        sys.exit(1)
    except OSError as exc:
        import errno

        from nas.errors import is_disk_full

        if is_disk_full(exc):
            _print_error(out, "no space left on the device; free some space and run the command again.")
            sys.exit(1)
        if exc.errno != errno.EROFS:
            raise
        _print_error(out, f"cannot write {exc.filename or 'a file'} (read-only file system); copy the campaign "
                          "folder somewhere writable, or choose another --out/--export-dir.")
        sys.exit(1)
    except Exception as exc:
        from nas.errors import is_disk_full

        if not is_disk_full(exc):
            raise
        _print_error(out, "no space left on the device; free some space and run the command again.")
        sys.exit(1)


def warnings_on_one_line(out: Output) -> None:
    """Python warnings (a stale latency calibration, a library's deprecation) as one ``warning:`` line each,
    without the file name and source line Python adds, which read as a crash to a user."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001 - warnings' signature
        out.warn(str(message))

    warnings.showwarning = show
    # MLflow's SQLAlchemy store configures a deprecated loader at every open: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated.*")


def _print_error(out: Output, message: str) -> None:
    """``error: message`` with the message printed verbatim: rich would read ``x:abc:`` as an emoji code and
    ``[brackets]`` as style tags, and a message names the user's own values."""
    from rich.text import Text

    out.stderr.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


if __name__ == "__main__":
    main()
