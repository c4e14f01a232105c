"""Misleading or crashing *output* on bad input, which the table in test_bad_inputs.py cannot express: text
printed verbatim whatever the user's names contain, Python warnings on one line, and the sweep of the
``.tmp-teacher-*`` folders a killed fine-tune leaves (issue #21, "misleading output")."""

from __future__ import annotations

import os
import time
import warnings

import pytest

from nas.output import Output

pytestmark = pytest.mark.bad_input


@pytest.mark.parametrize("text", ["campaign in /tmp/[/x]", "data :x: [bold]file[/].tsv", "{\"a\": \"[/b]\"}"])
def test_user_text_is_printed_verbatim_not_as_rich_markup(text, capsys):
    # Before: info() of a folder named "[/x]" raised rich's MarkupError (a traceback); ":x:" became an emoji.
    out = Output()
    out.info(text)
    out.warn(text)
    out.error(text)
    out.result(text)
    captured = capsys.readouterr()
    assert captured.out.strip() == text
    assert captured.err.splitlines() == [text, f"warning: {text}", f"error: {text}"]


def test_python_warnings_print_as_one_warning_line(capsys):
    from nas.cli import warnings_on_one_line

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings_on_one_line(Output(quiet=True))
        warnings.warn("the latency predictor was calibrated on another CPU", RuntimeWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: the latency predictor was calibrated on another CPU"]


def test_stale_teacher_temp_folders_are_swept_and_fresh_ones_kept(tmp_path, capsys):
    from nas.search.context import sweep_stale_teacher_temps

    stale, fresh, other = tmp_path / ".tmp-teacher-dead", tmp_path / ".tmp-teacher-live", tmp_path / "teacher-abc"
    for folder in (stale, fresh, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))  # a killed run's folder, two days old
    os.utime(other, (old, old))  # a finished cache entry: never touched, however old
    assert sweep_stale_teacher_temps(tmp_path, Output()) == 1
    assert not stale.exists() and fresh.is_dir() and other.is_dir()
    assert "removed 1 unfinished teacher folder" in capsys.readouterr().err
