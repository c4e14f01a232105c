"""Tuning records found on any node reach the campaign's database and every other node: a cluster tunes each
workload once.

Without a cluster: two (three) separate ``$LIGHTNAS_CACHE`` folders stand for the nodes and the driver. The
portable form is checked on hand-written lines (fast, no TVM) and on a real MetaSchedule JSON database
(TVM reads the merged database back and finds the record under its new workload number). The cluster path
itself (records returned with a trial, merged, shipped to the other node) is in ``tests/test_ray_cluster.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.hardware.tuning_db import (
    RECORDS, WORKLOADS, export_records, merge_records, read_untunable, tuning_snapshot, write_untunable,
)

DB = "llvm-znver3-2c-0123456789"


def _fake_db(root: Path, workloads: list[str], records: list[tuple[int, str]], name: str = DB) -> Path:
    """A database as MetaSchedule writes it: workload lines, then ``[workload line number,record]`` lines."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKLOADS).write_text("".join(f'["{w}","AAAA{w}"]\n' for w in workloads))
    (folder / RECORDS).write_text("".join(f"[{i},{r}]\n" for i, r in records))
    return folder


def _pairs(root: Path) -> set[tuple[str, str]]:
    return {(w, r) for part in export_records(root).values() for w, r in part["records"]}


def test_records_merge_under_their_own_workload_and_merging_again_adds_nothing(tmp_path):
    node = _fake_db(tmp_path / "node", ["111", "222"], [(1, '[["t2"],[2e-05]]'), (0, '[["t1"],[1e-05]]')])
    driver = _fake_db(tmp_path / "driver", ["222", "999"], [(1, '[["t9"],[9e-05]]')])
    added = merge_records(export_records(tmp_path / "node"), tmp_path / "driver")
    assert added == 2
    lines = (driver / RECORDS).read_text().splitlines()
    workloads = (driver / WORKLOADS).read_text().splitlines()
    assert workloads == ['["222","AAAA222"]', '["999","AAAA999"]', '["111","AAAA111"]']  # 222 known, 111 appended
    assert lines == ['[1,[["t9"],[9e-05]]]', '[0,[["t2"],[2e-05]]]', '[2,[["t1"],[1e-05]]]']  # renumbered to the driver's lines
    assert _pairs(tmp_path / "driver") == _pairs(tmp_path / "node") | {('["999","AAAA999"]', '[["t9"],[9e-05]]')}
    assert merge_records(export_records(tmp_path / "node"), tmp_path / "driver") == 0  # idempotent
    assert merge_records(export_records(tmp_path / "driver"), tmp_path / "driver") == 0  # into itself
    assert (node / RECORDS).read_text().count("\n") == 2  # the source is not touched


def test_export_since_a_snapshot_is_only_what_a_trial_added(tmp_path):
    folder = _fake_db(tmp_path, ["111"], [(0, '[["t1"],[1e-05]]')])
    write_untunable(folder, {"5"})
    before = tuning_snapshot(tmp_path)
    assert export_records(tmp_path, since=before) == {}
    with open(folder / RECORDS, "a") as handle:  # what MetaSchedule commits during the trial
        handle.write('[0,[["t1b"],[3e-06]]]\n')
    write_untunable(folder, {"5", "6"})
    _fake_db(tmp_path, ["333"], [(0, '[["t3"],[4e-05]]')], name="llvm-other-1c-aa")  # a database new to this node
    new = export_records(tmp_path, since=before)
    assert new == {DB: {"records": [['["111","AAAA111"]', '[["t1b"],[3e-06]]']], "untunable": ["6"]},
                   "llvm-other-1c-aa": {"records": [['["333","AAAA333"]', '[["t3"],[4e-05]]']], "untunable": []}}
    target = tmp_path / "driver"
    merge_records(new, target)
    assert read_untunable(target / DB) == {"6"} and (target / "llvm-other-1c-aa" / WORKLOADS).is_file()


def test_records_naming_a_folder_outside_the_cache_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        merge_records({"../escape": {"records": [], "untunable": []}}, tmp_path)


def _module(n: int):
    import tvm
    from tvm import te

    a = te.placeholder((n,), name="a")
    return tvm.IRModule({"main": te.create_prim_func([a, te.compute((n,), lambda i: a[i] * 2.0, name="c")])})


def _tune(folder: Path, n: int, target) -> None:
    """What a tuner commits on one node: the workload of size ``n`` and one record for it."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    folder.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(folder))
    sch = Schedule(_module(n))
    (loop,) = sch.get_loops(sch.get_sblock("c"))
    sch.split(loop, [None, 4])
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(_module(n)), [1e-5 * n], target, []))


def _served(folder: Path, sizes: list[int], target) -> list[int]:
    """The sizes whose workload a fresh open of the database has a record for, as a build would ask it."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(folder))
    return [n for n in sizes if db.query_tuning_record(_module(n), target, "main") is not None]


def test_a_record_tuned_on_one_node_serves_the_other_node_after_the_driver_merges_it(tmp_path):
    """Real MetaSchedule databases: node A tunes workload 64, node B workload 32; A's new records go to the
    driver, the driver's database to B; TVM then finds both on B (A's under a renumbered workload line)."""
    import tvm

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    node_a, node_b, driver = (tmp_path / n / DB for n in ("a", "b", "driver"))
    _tune(node_b, 32, target)
    before = tuning_snapshot(tmp_path / "a")
    _tune(node_a, 64, target)
    assert merge_records(export_records(tmp_path / "a", since=before), tmp_path / "driver") == 1
    assert merge_records(export_records(tmp_path / "driver"), tmp_path / "b") == 1
    assert _served(node_b, [32, 64], target) == [32, 64]  # B would not tune 64 again
    assert _served(driver, [32, 64], target) == [64]
    assert (node_b / WORKLOADS).read_text().splitlines()[1] == (node_a / WORKLOADS).read_text().splitlines()[0]


def test_the_driver_ships_a_new_version_only_when_a_node_brought_new_records(tmp_path):
    from nas.search.ray_shipping import TuningShipper

    class Store:  # Ray's object store, as far as the shipper uses it
        def __init__(self) -> None:
            self.puts: list[dict] = []

        def put(self, value: dict) -> int:
            self.puts.append(value)
            return len(self.puts) - 1

    _fake_db(tmp_path / "driver", ["111"], [(0, '[["t1"],[1e-05]]')])
    store = Store()
    shipper = TuningShipper(store, tmp_path / "driver")
    first = shipper.current()
    assert shipper.current() is first and len(store.puts) == 1  # once per version, not once per trial
    assert shipper.absorb(export_records(tmp_path / "driver")) == 0 and shipper.current() is first  # nothing new
    _fake_db(tmp_path / "node", ["222"], [(0, '[["t2"],[2e-05]]')])
    assert shipper.absorb(export_records(tmp_path / "node")) == 1 and shipper.merged == 1
    second = shipper.current()
    assert second.digest != first.digest and len(store.puts) == 2
    assert {w for w, _ in store.puts[1][DB]["records"]} == {'["111","AAAA111"]', '["222","AAAA222"]'}
