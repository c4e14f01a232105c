"""The catalogue of user mistakes: each gets one clear line on stderr and exit code 1 (2 for CLI usage).

Table-driven: every case writes its inputs into a fresh folder, runs the ``nas`` entry point in this
process (``nas.cli.main``, exactly what the console script runs), and checks the exit code, that the
message names the problem, and that no traceback escaped. ``pytest -m bad_input`` runs only these.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import small_campaign_dict

pytestmark = pytest.mark.bad_input


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # writes files under the folder, returns the CLI arguments
    message: str  # must appear in stderr
    code: int = 1
    absent: tuple[str, ...] = ()  # must not appear in stderr (a misleading word, a dumped config)


def _campaign(tmp: Path, **overrides) -> list[str]:
    path = tmp / "campaign.yaml"
    path.write_text(yaml.safe_dump(small_campaign_dict(**overrides)))
    return ["search", "--config", str(path), "--out", str(tmp / "out"), "--quiet"]


def _raw_campaign(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "campaign.yaml").write_text(text)
        return ["search", "--config", str(tmp / "campaign.yaml"), "--out", str(tmp / "out"), "--quiet"]

    return setup


def _with_file(name: str, content: str | bytes, **overrides) -> Callable[[Path], list[str]]:
    """A campaign whose task reads ``name`` (written with ``content``) as its train split."""

    def setup(tmp: Path) -> list[str]:
        data = tmp / "data"
        data.mkdir()
        target = data / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return _campaign(tmp, task={"source": str(target), "validation_fraction": 0.5}, **overrides)

    return setup


def _space(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "space.yaml").write_text(text)
        return _campaign(tmp, space=str(tmp / "space.yaml"))

    return setup


def _profile(text: str, name: str = "board") -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / f"{name}.yaml").write_text(text)
        return ["profiles", "show", str(tmp / f"{name}.yaml")]

    return setup


def _unwritable(tmp: Path) -> list[str]:
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")  # works as root too, unlike chmod
    return _campaign(tmp)[:-3] + ["--out", str(blocker / "campaign"), "--quiet"]


def _resume_changed_space(tmp: Path) -> list[str]:
    import optuna

    from nas.search.campaign import CampaignPaths

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = tmp / "space.yaml"
    space.write_text((Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text())
    folder = tmp / "camp"
    folder.mkdir()
    config = small_campaign_dict(space=str(space))
    (folder / "campaign.yaml").write_text(yaml.safe_dump(config))
    study = optuna.create_study(study_name="test", storage=CampaignPaths(folder).storage_url,
                                directions=["maximize", "minimize"])
    study.set_user_attr("space_fingerprint", "0123456789abcdef")  # recorded by an earlier version of the space
    return ["resume", str(folder), "--quiet"]


def _campaign_file_only(tmp: Path) -> list[str]:
    (tmp / "campaign.yaml").write_text(yaml.safe_dump(small_campaign_dict()))
    return ["status", str(tmp)]


def _no_campaign(command: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [command, str(tmp)]


def _campaign_folder(tmp: Path, study: str | None = "test", trials: int = 0) -> Path:
    """A campaign folder as ``nas search`` leaves it: campaign.yaml and (with ``study``) a real Optuna study.db."""
    import optuna

    from nas.search.campaign import CampaignPaths, sqlite_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp / "camp"
    folder.mkdir()
    (folder / "campaign.yaml").write_text(yaml.safe_dump(small_campaign_dict()))
    if study is not None:
        storage = sqlite_storage(CampaignPaths(folder).root / "study.db", writer=True)
        created = optuna.create_study(study_name=study, storage=storage, directions=["maximize", "minimize"])
        for i in range(trials):
            created.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.5 + i / 100, 3.0],
                                                        user_attrs={"note": "x" * 2000}))
        storage.engine.dispose()  # close it, as a finished driver does (merges the -wal file)
    return folder


def _with_study_file(content: bytes | None = None, *, command: str = "status", study: str | None = "test",
                     truncate_to: float | None = None, foreign_table: bool = False) -> Callable[[Path], list[str]]:
    """A campaign whose study.db is replaced by ``content``, cut to a fraction of its size, or another database."""

    def setup(tmp: Path) -> list[str]:
        import sqlite3

        folder = _campaign_folder(tmp, study=study, trials=40)
        db = folder / "study.db"
        if content is not None:
            db.write_bytes(content)
        if truncate_to is not None:
            data = db.read_bytes()
            db.write_bytes(data[: int(len(data) * truncate_to)])
        if foreign_table:
            db.unlink()
            with sqlite3.connect(db) as conn:
                conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
        extra = {"status": [], "resume": ["--quiet"], "report": [], "select": ["--profile", "host", "--quiet"]}[command]
        return [command, str(folder), *extra]

    return setup


def _live_driver(command: str) -> Callable[[Path], list[str]]:
    """A campaign folder whose lock is held (by this process, as a running driver would hold it)."""

    def setup(tmp: Path) -> list[str]:
        from nas.search.campaign import CampaignLock

        folder = _campaign_folder(tmp, trials=1)
        lock = CampaignLock(folder)
        lock.acquire(create=False)
        _HELD_LOCKS.append(lock)  # released by the fixture below, after the command has run
        if command == "search":
            return _campaign(tmp)[:-3] + ["--out", str(folder), "--quiet"]
        return [command, str(folder), "--quiet"]

    return setup


_HELD_LOCKS: list = []


def _a_file(command: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "notes.txt").write_text("not a campaign")
        return [command, str(tmp / "notes.txt")]

    return setup


def _report_out_at_a_file(tmp: Path) -> list[str]:
    folder = _campaign_folder(tmp, trials=1)
    (tmp / "report.html").write_text("an existing file")
    return ["report", str(folder), "--out", str(tmp / "report.html")]


def _bench_bad_trial(tmp: Path) -> list[str]:
    folder = _campaign_folder(tmp, study=None)
    return ["bench", f"{folder}:abc", "--profiles", "host"]


def _long_cell(tmp: Path) -> list[str]:
    return _with_file("train.tsv", "sentence\tlabel\n" + "good\t1\nbad\t0\n" * 4 + "x" * 1_200_000 + "\t1\n")(tmp)


def _campaign_over(text: str) -> Callable[[Path], list[str]]:
    """A campaign file: the small test campaign with ``text`` (YAML) appended."""

    def setup(tmp: Path) -> list[str]:
        (tmp / "campaign.yaml").write_text(yaml.safe_dump(small_campaign_dict()) + text)
        return ["search", "--config", str(tmp / "campaign.yaml"), "--out", str(tmp / "out"), "--quiet"]

    return setup



def _cache_is_a_file(tmp: Path) -> list[str]:
    (tmp / "cache").write_text("not a folder")
    os.environ["LIGHTNAS_CACHE"] = str(tmp / "cache")  # restored by the test's monkeypatch (it saved the old value)
    return _campaign(tmp)


def _bench_empty_onnx(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_bytes(b"")
    return ["bench", str(tmp / "model.onnx"), "--profiles", "host"]


def _bench_twice(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_bytes(b"")
    return ["bench", str(tmp / "model.onnx"), "--profiles", "host,host"]


GOOD_SPACE = (Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text()
ROWS = "".join(f"{w}\t{y}\n" for w, y in [("good", 1), ("bad", 0)] * 4)  # 8 valid TSV rows, both classes

CASES = [
    # campaign files
    Case("missing campaign file", lambda t: ["search", "--config", str(t / "nope.yaml")], "file not found"),
    Case("YAML syntax error", _raw_campaign("n_trials: [\n"), "YAML syntax error at line"),
    Case("unknown key with typo", _raw_campaign("n_trails: 3\n"), "did you mean 'n_trials'?"),
    Case("wrong type", _raw_campaign("n_trials: many\n"), "n_trials = 'many' is invalid"),
    Case("negative budget", _raw_campaign("n_trials: -1\n"), "n_trials = -1 is invalid"),
    Case("negative training steps", _raw_campaign("fidelity: {steps: -5}\n"), "fidelity.steps = -5 is invalid"),
    Case("sequence length 0", _raw_campaign("max_seq_len: 0\n"), "max_seq_len = 0 is invalid"),
    Case("unknown sampler", _raw_campaign("sampler: cmaes\n"), "sampler = 'cmaes' is invalid"),
    Case("unknown objective metric", _raw_campaign("objectives: [{metric: speed, direction: minimize}]\n"), "speed"),
    Case("objective on a profile not in the campaign",
         _raw_campaign("objectives: [{metric: latency_ms, profile: pixel, direction: minimize}]\n"), "profile 'pixel'"),
    Case("constraint with both bounds", _raw_campaign("constraints: [{metric: size_bytes, max: 1, min: 0}]\n"),
         "exactly one of 'max' or 'min'"),
    Case("flash constraint on a profile that is not an MCU",
         lambda t: _campaign(t, constraints=[{"metric": "flash_bytes", "profile": "host", "max": 1e6}]),
         "computed for MCU profiles"),
    Case("successive halving bounds reversed", _raw_campaign("fidelity: {steps: 50, min_steps: 80}\n"),
         "min_steps (80) must be below steps (50)"),
    Case("unknown profile", lambda t: _campaign(t, profiles=["pixel-99"]), "pixel-99"),
    Case("unknown search space", lambda t: _campaign(t, space="huge"), "huge"),
    Case("teacher path that is not a model", lambda t: _campaign(t, teacher={"model": str(t)}),
         "not a Hugging Face model folder"),
    Case("campaign folder not writable", _unwritable, "cannot write the campaign folder"),
    Case("resuming a campaign whose space changed", _resume_changed_space, "changed since this campaign started"),
    Case("status of a folder without a campaign", _no_campaign("status"), "no campaign here"),
    Case("status of a campaign whose study was never created", _campaign_file_only, "has not started a study yet"),
    Case("resume of a folder without a campaign", _no_campaign("resume"), "no campaign here"),
    Case("Ray address that does not answer",
         lambda t: _campaign(t) + ["--ray-address", "127.0.0.1:1"], "no Ray cluster answered"),
    # search spaces
    Case("empty search space", _space("name: empty\n"), "space"),
    Case("contradictory bounds in a space",
         _space(GOOD_SPACE.replace("n_layers: {type: int, low: 1, high: 4}", "n_layers: {type: int, low: 5, high: 2}")),
         "n_layers"),
    Case("misspelt key in a space", _space(GOOD_SPACE.replace("hidden_size:", "hiden_size:", 1)), "hidden_size"),
    # hardware profiles
    Case("MCU profile without memory limits",
         _profile("name: board\nhw_class: mcu\ntarget: {kind: c}\ncores: 1\nlatency: {method: estimate}\n"
                  "peak: {clock_mhz: 64, int8_macs_per_cycle: 2.0, fp32_macs_per_cycle: 1.0}\n"), "memory"),
    Case("unknown profile shown", lambda t: ["profiles", "show", "pixel-99"], "pixel-99"),
    Case("remote RPC tracker without the explicit flag",
         _profile("name: board\nhw_class: sbc\ntarget: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: cortex-a72}\n"
                  "cores: 4\nlatency: {method: rpc, rpc_host: 10.0.0.7, rpc_port: 9190, rpc_key: pi}\n"
                  "peak: {clock_mhz: 1500, int8_macs_per_cycle: 16, fp32_macs_per_cycle: 8}\n"), "allow_remote: true"),
    # data
    Case("data file that does not exist", lambda t: _campaign(t, task={"source": str(t / "none.tsv")}), "not found"),
    Case("data file without a label column", _with_file("train.tsv", "sentence\tstars\ngood\t1\nbad\t0\n"), "label"),
    Case("labels that are not integers", _with_file("train.tsv", "sentence\tlabel\ngood\tyes\nbad\tno\n"), "label"),
    Case("empty dataset", _with_file("train.tsv", "sentence\tlabel\n"), "no data rows"),
    Case("single-class dataset", _with_file("train.tsv", "sentence\tlabel\n" + "good\t1\n" * 8), "class"),
    Case("non-UTF-8 text", _with_file("train.tsv", b"sentence\tlabel\ncaf\xe9\t1\nbad\t0\n"), "not UTF-8"),
    # campaign files: values YAML or pydantic would accept silently
    Case("a key given twice", _raw_campaign("n_trials: 5\nseed: 1\nn_trials: 5000\n"),
         "key 'n_trials' appears twice (lines 1 and 3)"),
    Case("a key given twice in a section", _raw_campaign("fidelity:\n  steps: 10\n  steps: 20\n"), "appears twice"),
    Case("true as a trial budget", _raw_campaign("n_trials: true\n"), "n_trials = True is invalid"),
    Case("true as training steps", _raw_campaign("fidelity: {steps: yes}\n"), "not true/false"),
    Case("a profile listed twice", _raw_campaign("profiles: [host, host]\n"), "profile 'host' is listed twice"),
    Case("negative seed", _raw_campaign("seed: -1\n"), "seed = -1 is invalid"),
    Case("seed too large", _raw_campaign("seed: 99999999999\n"), "seed = 99999999999 is invalid"),
    Case("storage that is not a URL", _raw_campaign("storage: my database\n"), "is not a database URL"),
    Case("storage of an unknown database kind", _raw_campaign("storage: 'foo://db.example/x'\n"), "unknown database kind"),
    Case("PostgreSQL storage without its driver", _raw_campaign("storage: 'postgresql+pg8000://u:secret@127.0.0.1/db'\n"),
         "needs the database driver", absent=("secret",)),
    Case("a cross-field error does not print the whole section",
         _raw_campaign("fidelity: {steps: 50, min_steps: 80, batch_size: 16, lr: 0.001}\n"), "min_steps (80)",
         absent=("{'steps'", "batch_size")),
    # data files
    Case("two rows: too few for a validation split", _with_file("train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n"),
         "too few to carve a validation split"),
    Case("a text file renamed .parquet", _with_file("train.parquet", "sentence\tlabel\ngood\t1\n"), "not a readable Parquet file"),
    Case("every sentence empty", _with_file("train.jsonl", "".join(f'{{"sentence": "", "label": {i % 2}}}\n' for i in range(8))),
         "every value of column 'sentence' is empty"),
    Case("TSV row with an extra column", _with_file("train.tsv", "sentence\tlabel\n" + ROWS + "so\tgood\t1\n"),
         "line 10 has 3 tab-separated cells but the header has 2"),
    Case("CSV row with an extra column", _with_file("train.csv", "sentence,label\n" + ROWS.replace("\t", ",") + "so,good,1\n"),
         "line 10 has 3 comma-separated cells"),
    Case("a 1.2 MB TSV cell", _long_cell, "has a cell longer than 131,072 characters", absent=("quoting",)),
    # campaign folders
    Case("status of an empty study.db", _with_study_file(b""), "the study file is empty", absent=("not started",)),
    Case("status of a study.db that is not SQLite", _with_study_file(b"hello, I am a text file\n" * 50),
         "not a readable SQLite database"),
    Case("status of a truncated study.db", _with_study_file(truncate_to=0.5), "study.db", absent=("not started",)),
    Case("status of a foreign SQLite database", _with_study_file(foreign_table=True), "not an Optuna study file"),
    Case("status of another campaign's study.db", _with_study_file(study="someone-else"), "holds no study named 'test'",
         absent=("not started",)),
    Case("resume of a corrupt study.db", _with_study_file(b"garbage" * 100, command="resume"), "not a readable SQLite database"),
    Case("resume of an empty study.db", _with_study_file(b"", command="resume"), "the study file is empty"),
    Case("report of a corrupt study.db", _with_study_file(b"garbage" * 100, command="report"), "not a readable SQLite database"),
    Case("select of a corrupt study.db", _with_study_file(b"garbage" * 100, command="select"), "not a readable SQLite database"),
    Case("resume of a file, not a folder", _a_file("resume"), "is a file, not a campaign folder", absent=("start one with",)),
    Case("status of a file, not a folder", _a_file("status"), "is a file, not a campaign folder"),
    Case("resume while the driver runs", _live_driver("resume"), f"another driver (PID {os.getpid()}) is running this campaign"),
    Case("search into a folder whose driver runs", _live_driver("search"), f"a campaign is running here (driver PID {os.getpid()})"),
    Case("report --out at an existing file", _report_out_at_a_file, "is a file; the report needs a folder"),
    # nas bench
    Case("bench of CAMPAIGN:abc", _bench_bad_trial, "'abc' is not a trial number"),
    Case("bench of x:abc is printed verbatim", lambda t: ["bench", "x:abc", "--profiles", "host"], "x:abc: no such file"),
    # found by trying the tool as a new user would (beyond issue #21's list)
    Case("an empty campaign file", _raw_campaign(""), "is empty"),
    Case("a campaign file of comments only", _raw_campaign("# n_trials: 3\n"), "is empty"),
    Case("a folder as the campaign file", lambda t: ["search", "--config", str(t), "--out", str(t / "out")], "is a folder, not a file"),
    Case("a campaign folder named like a closing style tag", lambda t: ["status", str(t / "[/x]")], "[/x]"),
    Case("a data file named like emoji codes", lambda t: _campaign(t, task={"source": str(t / ":x: [/b].tsv")}), ":x: [/b].tsv"),
    Case("labels that are floats", _with_file("train.tsv", "sentence\tlabel\n" + ROWS.replace("\t1", "\t1.5")), "label"),
    Case("negative labels", _with_file("train.tsv", "sentence\tlabel\n" + ROWS.replace("\t0", "\t-1")), "label"),
    Case("an empty label cell", _with_file("train.tsv", "sentence\tlabel\n" + ROWS + "so so\t\n"), "label"),
    Case("a JSONL line that is not JSON", _with_file("train.jsonl", '{"sentence": "a", "label": 0}\n{oops\n'), "line 2 is not valid JSON"),
    Case("a gzipped data file", _with_file("train.tsv.gz", b"\x1f\x8b\x08\x00junk"), "train.tsv.gz"),
    Case("a data folder without a train file", lambda t: (t / "d").mkdir() or _campaign(t, task={"source": str(t / "d")}), "train"),
    Case("validation fraction of 1", lambda t: _campaign(t, task={"validation_fraction": 1.0}), "validation_fraction"),
    Case("zero training examples", lambda t: _campaign(t, task={"max_train_examples": 0}), "max_train_examples"),
    Case("no profiles", _raw_campaign("profiles: []\n"), "profiles"),
    Case("no objectives", _raw_campaign("objectives: []\n"), "objectives"),
    Case("the same objective twice",
         _raw_campaign("objectives: [{metric: accuracy, direction: maximize}, {metric: accuracy, direction: maximize}]\n"), "objectives repeat a metric"),
    Case("a constraint on an unknown metric", _raw_campaign("constraints: [{metric: speed, max: 1}]\n"), "speed"),
    Case("a learning rate of 0", _raw_campaign("fidelity: {lr: 0}\n"), "fidelity.lr = 0"),
    Case("a batch size of 0", _raw_campaign("fidelity: {batch_size: 0}\n"), "fidelity.batch_size = 0"),
    Case("a sequence longer than the teacher takes", _raw_campaign("max_seq_len: 100000\n"), "max_seq_len"),
    Case("a space file that is a folder", lambda t: (t / "sp.yaml").mkdir() or _campaign(t, space=str(t / "sp.yaml")), "is a folder"),
    Case("a missing space file", lambda t: _campaign(t, space=str(t / "nope.yaml")), "nope.yaml"),
    Case("a name with a slash", _raw_campaign("name: ../evil\n"), "name = '../evil' is invalid"),
    Case("a cache path that is a file", _cache_is_a_file, "cannot write the teacher cache"),
    Case("select for a profile the campaign lacks", lambda t: ["select", str(_campaign_folder(t, trials=1)), "--profile", "rpi4"], "not a profile of campaign"),
    Case("select with a negative latency limit", lambda t: ["select", str(_campaign_folder(t, trials=1)), "--profile", "host", "--max-latency-ms", "-3"], "must be positive"),
    Case("bench of a trial that does not exist", lambda t: ["bench", f"{_campaign_folder(t, trials=1)}:99", "-p", "host"], "has no trial 99"),
    Case("bench of a negative trial number", lambda t: ["bench", f"{_campaign_folder(t, trials=1)}:-1", "-p", "host"], "trial"),
    Case("bench of an empty .onnx file", _bench_empty_onnx, "is empty"),
    Case("bench with a profile listed twice", _bench_twice, "listed twice"),
    Case("report of a folder without a campaign", _no_campaign("report"), "no campaign here"),
    Case("status --json of a corrupt study.db", lambda t: _with_study_file(b"garbage" * 100)(t) + ["--json"], "not a readable SQLite database"),
    # the command line itself
    Case("bad option value", lambda t: ["search", "--n-trials", "zero"], "Invalid value", code=2),
    Case("unknown command", lambda t: ["serch"], "No such command", code=2),
]


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while _HELD_LOCKS:
        _HELD_LOCKS.pop().release()


@pytest.fixture(autouse=True, scope="module")
def _no_stale_log_handlers():
    # Optuna's default handler keeps the stderr of the test that first logged; capsys closes it later.
    import optuna

    optuna.logging.disable_default_handler()
    yield
    optuna.logging.enable_default_handler()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line(case: Case, tmp_path: Path, nas_cli, monkeypatch) -> None:
    monkeypatch.delenv("NAS_DEBUG", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("LIGHTNAS_CACHE", os.environ.get("LIGHTNAS_CACHE", ""))  # a case may point it elsewhere
    args = case.setup(tmp_path)
    proc = nas_cli(*args)
    code, err = proc.returncode, proc.stderr
    assert code == case.code, err
    assert case.message in err, err
    assert "Traceback" not in err
    for text in case.absent:
        assert text not in err, err
    if case.code == 1:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line, got: {err}"


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 60
