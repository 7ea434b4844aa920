"""JSONL export and import: typed values, exact round trips, damage, edits, re-imports, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
import tempfile
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmdbstate import (
    CheckpointStore,
    CodecError,
    InterchangeError,
    UnsupportedFormatError,
    WorkflowNotFoundError,
    codec,
    export_jsonl,
    import_jsonl,
)
from lmdbstate.interchange import MARKERS, decode_value, encode_value
from lmdbstate.memory import MEMORY_PATH

from .damage import raw_get, raw_put
from .test_cli import error_lines, invoke, runner  # noqa: F401 - runner is a fixture

DOC = Path(__file__).resolve().parent.parent / "docs" / "import-export.md"
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def ckpt_key(workflow_id: str, seq: int) -> bytes:
    return workflow_id.encode() + b"\x00" + seq.to_bytes(8, "big")


def round_trip(value: Any) -> Any:
    """``value`` through its JSON form and back, as an export line carries it."""
    return decode_value(json.loads(json.dumps(encode_value(value), allow_nan=False)))


def same_bytes(a: Any, b: Any) -> bool:
    return codec.encode(a) == codec.encode(b)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict[str, Any] | str]) -> None:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")


def records_of(store: CheckpointStore, workflow_id: str) -> list[tuple[Any, ...]]:
    """Everything a checkpoint's record is built from, and its digest."""
    return [
        (info.seq, info.created_ns, info.step, info.schema, info.size, info.digest)
        for info in store.history(workflow_id)
    ]


# -- typed values -----------------------------------------------------------------------------

NAN_WITH_PAYLOAD = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00\xffhi", {"$bytes": "AP9oaQ=="}),
        ((1, "two"), {"$tuple": [1, "two"]}),
        ({10, 9, 100}, {"$set": [9, 10, 100]}),
        (frozenset({"b", "a"}), {"$frozenset": ["a", "b"]}),
        (dt.date(2024, 1, 2), {"$date": "2024-01-02"}),
        (
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            {"$uuid": "12345678-1234-5678-1234-567812345678"},
        ),
        (Decimal("1.50"), {"$decimal": "1.50"}),
        (2**53, {"$int": "9007199254740992"}),
        (-(2**63), {"$int": "-9223372036854775808"}),
        (2**53 - 1, 2**53 - 1),
        (float("nan"), {"$float": "nan"}),
        (-float("nan"), {"$float": "nan:fff8000000000000"}),
        (NAN_WITH_PAYLOAD, {"$float": "nan:7ff8000000000123"}),
        (float("inf"), {"$float": "inf"}),
        (float("-inf"), {"$float": "-inf"}),
        (-0.0, -0.0),
        (1.0, 1.0),
        ({7: "seven"}, {"$dict": [[7, "seven"]]}),
        ({"$set": [1]}, {"$dict": [["$set", [1]]]}),
        ({"$a": 1, "b": 2}, {"$a": 1, "b": 2}),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, 678000),
            {"$datetime": {"iso": "2024-01-02T03:04:05.678000"}},
        ),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            {"$datetime": {"iso": "2024-01-02T03:04:05+00:00"}},
        ),
        (
            dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
            {"$datetime": {"iso": "2024-10-27T02:30:00+01:00", "zone": "Europe/Paris", "fold": 1}},
        ),
        (
            dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
            {"$datetime": {"iso": "2024-01-01T00:00:00+01:00", "tzname": "CET"}},
        ),
    ],
)
def test_typed_value_forms(value: Any, expected: Any) -> None:
    encoded = encode_value(value)
    assert json.dumps(encoded) == json.dumps(expected)
    back = round_trip(value)
    assert type(back) is type(value)
    assert same_bytes(back, value)


def test_nested_values_round_trip_with_their_types() -> None:
    value = {
        "steps": [(1, {"b": b"x"}), {frozenset({1, 2}): {dt.date(2020, 2, 29)}}],
        (1, "k"): [None, True, False, 0, "", {"": []}],
        None: Decimal("-0E+3"),
    }
    back = round_trip(value)
    assert back == value
    assert same_bytes(back, value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"$bogus": 1}, r"unknown type marker '\$bogus'"),
        ({"$bytes": "not base64!"}, r"\$bytes: "),
        ({"$bytes": 5}, r"\$bytes: expected a string, not int"),
        ({"$set": [[1]]}, r"\$set: unhashable type: 'list'"),
        ({"$tuple": "ab"}, r"\$tuple: expected an array, not str"),
        ({"$dict": [[1, 2, 3]]}, r"\$dict: expected an array of \[key, value\] pairs"),
        ({"$int": "12.5"}, r"\$int: not an integer: '12.5'"),
        ({"$float": "nan:0000000000000000"}, r"\$float: not inf, -inf, nan"),
        ({"$float": "NaN"}, r"\$float: not inf"),
        ({"$decimal": "one"}, r"\$decimal: "),
        ({"$date": "2024-02-30"}, r"\$date: day is out of range"),
        ({"$datetime": {"iso": "2024-01-01T00:00", "when": 1}}, r"unknown fields \['when'\]"),
        ({"$datetime": {"iso": "2024-01-01T00:00", "tzname": "X"}}, "tzname needs an offset"),
        ({"$datetime": {"iso": "2024-01-01T00:00", "zone": "Nowhere/Else"}}, r"\$datetime: "),
        ({"$datetime": {"iso": "2024-01-01T00:00", "fold": 2}}, "fold must be 0 or 1"),
        ({"$datetime": "2024-01-01T00:00"}, r"\$datetime: expected an object, not str"),
        ({"$tuple": [{"$uuid": "xyz"}]}, r"\$tuple: \$uuid: "),
    ],
)
def test_bad_typed_values_name_their_marker(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_value(data)


def test_unsupported_type_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="unsupported type builtins.complex"):
        encode_value(1j)


def test_the_doc_lists_every_marker() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Typed values") :]
    section = section[: section.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `(\$[a-z]+)` \|", section, flags=re.MULTILINE))
    assert documented == MARKERS


# -- export then import: exact round trips (hypothesis) -------------------------------------

fixed_zones = st.builds(
    lambda us, name: dt.timezone(dt.timedelta(microseconds=us), *([name] if name else [])),
    st.integers(-86_399_999_999, 86_399_999_999),
    st.none() | st.text(min_size=1, max_size=4),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    st.binary(),
    st.datetimes(timezones=st.none() | st.timezones() | fixed_zones),
    st.dates(),
    st.uuids(),
    st.decimals(),
)
keys = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.binary(max_size=4),
    st.none(),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=3)),
    st.frozensets(st.integers(-(2**63), 2**63 - 1), max_size=3),
)
# Sets of one kind of item: items that sort are stored sorted, so equal sets give equal bytes.
sets = st.one_of(
    st.sets(st.integers(min_value=-(2**63), max_value=2**63)),
    st.sets(st.text()),
    st.frozensets(st.binary()),
    st.frozensets(st.floats(allow_nan=False)),
)
states = st.recursive(
    scalars | sets,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(st.just("$set") | st.text(), children, max_size=1),
    ),
    max_leaves=12,
)
metas = st.dictionaries(st.text(max_size=5), states, max_size=3)
steps = st.none() | st.text(max_size=8) | st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b/ü", "c 1"]), states, steps, metas, st.integers(1, 9)),
        min_size=1,
        max_size=6,
    )
)
def test_export_then_import_gives_the_same_records_and_digests(
    puts: list[tuple[str, Any, Any, dict[str, Any], int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "export.jsonl"
        with CheckpointStore(MEMORY_PATH) as source, CheckpointStore(MEMORY_PATH) as dest:
            for workflow_id, state, step, meta, schema in puts:
                source.put(workflow_id, state, step=step, meta=meta, schema=schema)
            exported = export_jsonl(source, path)
            report = import_jsonl(dest, path)
            assert (exported.checkpoints, report.imported) == (len(puts), len(puts))
            assert report.ok, report
            for info in source.workflows():
                assert records_of(dest, info.workflow_id) == records_of(source, info.workflow_id)
                for checkpoint in source.history(info.workflow_id):
                    original = source.get(info.workflow_id, checkpoint.seq)
                    imported = dest.get(info.workflow_id, checkpoint.seq)
                    assert same_bytes(imported.state, original.state)
                    assert same_bytes(imported.meta, original.meta)
                    assert imported.digest == original.digest


# -- export -----------------------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A closed store: wf-a (completed, 3 checkpoints, extras), wf-b (running, 1 checkpoint)."""
    path = tmp_path / "source"
    with CheckpointStore(path) as store:
        for n in range(3):
            store.put("wf-a", {"n": n, "when": dt.date(2024, 1, n + 1)}, step=f"s{n}")
        store.set_status("wf-a", "completed", extras={"entrypoint": "jobs:ETL", "tags": (1, 2)})
        store.put("wf-b", [b"\x00"], step=1, schema=2, meta={"trigger": "start"})
    return path


def test_export_file_lines(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    with CheckpointStore(filled, readonly=True) as store:
        report = export_jsonl(store, out)
        infos = {wf: list(store.history(wf)) for wf in ("wf-a", "wf-b")}
        created = {wf: store.workflow(wf).created_ns for wf in ("wf-a", "wf-b")}
    assert (report.workflows, report.checkpoints, report.damaged) == (2, 4, ())
    assert report.ok
    assert report.bytes == out.stat().st_size
    header, *rest = lines(out)
    assert header["type"] == "header"
    assert (header["format"], header["version"], header["workflow_id"]) == (
        "lmdbstate-export",
        1,
        None,
    )
    assert [(r["type"], r["workflow_id"], r.get("seq")) for r in rest] == [
        ("workflow", "wf-a", None),
        ("checkpoint", "wf-a", 1),
        ("checkpoint", "wf-a", 2),
        ("checkpoint", "wf-a", 3),
        ("workflow", "wf-b", None),
        ("checkpoint", "wf-b", 1),
    ]
    assert rest[0] == {
        "type": "workflow",
        "workflow_id": "wf-a",
        "status": "completed",
        "created_ns": created["wf-a"],
        "extras": {"entrypoint": "jobs:ETL", "tags": {"$tuple": [1, 2]}},
    }
    info = infos["wf-b"][0]
    assert rest[-1] == {
        "type": "checkpoint",
        "workflow_id": "wf-b",
        "seq": 1,
        "created_ns": info.created_ns,
        "step": 1,
        "schema": 2,
        "digest": f"{info.digest:016x}",
        "meta": {"trigger": "start"},
        "state": [{"$bytes": "AA=="}],
    }
    assert not list(tmp_path.glob(".*partial"))


def test_export_one_workflow(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    with CheckpointStore(filled, readonly=True) as store:
        report = export_jsonl(store, out, workflow_id="wf-b")
        with pytest.raises(WorkflowNotFoundError):
            export_jsonl(store, tmp_path / "none.jsonl", workflow_id="nope")
    assert (report.workflows, report.checkpoints) == (1, 1)
    assert lines(out)[0]["workflow_id"] == "wf-b"
    assert {r["workflow_id"] for r in lines(out)} == {"wf-b"}
    assert not (tmp_path / "none.jsonl").exists()


def test_export_refuses_to_replace_a_file_unless_asked(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.jsonl"
    out.write_text("keep me")
    with CheckpointStore(filled, readonly=True) as store:
        with pytest.raises(InterchangeError, match="exists") as caught:
            export_jsonl(store, out)
        assert caught.value.path == out
        assert out.read_text() == "keep me"
        export_jsonl(store, out, overwrite=True)
    assert lines(out)[0]["type"] == "header"


def test_export_into_a_missing_directory_leaves_nothing(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.jsonl"
    with CheckpointStore(filled, readonly=True) as store:
        with pytest.raises(InterchangeError, match="cannot write .*No such file or directory"):
            export_jsonl(store, out)
        with pytest.raises(InterchangeError, match="cannot write"):
            export_jsonl(store, tmp_path, overwrite=True)  # a directory is no file to replace
    assert not out.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_export_skips_and_reports_damaged_checkpoints(filled: Path, tmp_path: Path) -> None:
    key = ckpt_key("wf-a", 2)
    record = bytearray(raw_get(filled, b"ckpt", key) or b"")
    record[-1] ^= 0xFF
    raw_put(filled, b"ckpt", key, bytes(record))
    out = tmp_path / "out.jsonl"
    with CheckpointStore(filled, readonly=True) as store:
        report = export_jsonl(store, out)
    assert not report.ok
    assert report.checkpoints == 3
    [damaged] = report.damaged
    assert (damaged.workflow_id, damaged.seq, damaged.key) == ("wf-a", 2, key)
    assert "digest mismatch" in damaged.reason
    assert [(r["workflow_id"], r["seq"]) for r in lines(out) if r["type"] == "checkpoint"] == [
        ("wf-a", 1),
        ("wf-a", 3),
        ("wf-b", 1),
    ]


def test_export_of_a_damaged_first_checkpoint_goes_on(filled: Path, tmp_path: Path) -> None:
    key = ckpt_key("wf-a", 1)
    record = bytearray(raw_get(filled, b"ckpt", key) or b"")
    record[0] ^= 0xFF
    raw_put(filled, b"ckpt", key, bytes(record))
    with CheckpointStore(filled, readonly=True) as store:
        report = export_jsonl(store, tmp_path / "out.jsonl", workflow_id="wf-a")
    assert [d.seq for d in report.damaged] == [1]
    assert report.checkpoints == 2


def test_export_reads_in_short_transactions_while_writers_go_on(
    filled: Path, tmp_path: Path
) -> None:
    """The progress callback writes to the store mid-export: no transaction of the export is
    open then, and each workflow is exported as it is when its turn comes."""
    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []
    with CheckpointStore(filled) as store:

        def write_meanwhile(done: int, total: int) -> None:
            seen.append((done, total))
            if done == 1:
                store.delete("wf-a", seq=3)
                store.put("wf-b", {"late": True})
                store.put("wf-new", {})

        report = export_jsonl(store, out, progress=write_meanwhile)
    exported = [(r["workflow_id"], r["seq"]) for r in lines(out) if r["type"] == "checkpoint"]
    # wf-a's third checkpoint was deleted before its turn, wf-b's second written before its
    # turn; wf-new was created after the listing that the export walks.
    assert exported == [("wf-a", 1), ("wf-a", 2), ("wf-b", 1), ("wf-b", 2)]
    assert report.checkpoints == len(exported) == len(seen)
    assert seen[0] == (1, 4)


def test_a_workflow_deleted_before_its_turn_is_left_out(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with CheckpointStore(filled) as store:
        report = export_jsonl(
            store, out, progress=lambda done, _: done == 1 and store.delete("wf-b") and None
        )
    assert (report.workflows, report.checkpoints) == (1, 3)
    assert {r["workflow_id"] for r in lines(out)[1:]} == {"wf-a"}


def test_export_of_a_gap_and_of_a_workflow_without_checkpoints(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "s") as store:
        for n in range(3):
            store.put("gappy", n)
        store.delete("gappy", seq=2)
        store.put("empty", 0)
        store.delete("empty", seq=1)
        export_jsonl(store, tmp_path / "out.jsonl")
    with CheckpointStore(tmp_path / "d") as dest:
        report = import_jsonl(dest, tmp_path / "out.jsonl")
        assert [info.seq for info in dest.history("gappy")] == [1, 3]
        with pytest.raises(WorkflowNotFoundError):
            dest.workflow("empty")
    [problem] = report.skipped
    assert (problem.source, problem.workflow_id, problem.reason) == (
        "line 2",
        "empty",
        "no checkpoint line follows: a workflow without checkpoints is not imported",
    )


# -- import -----------------------------------------------------------------------------------


@pytest.fixture
def exported(filled: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export.jsonl"
    with CheckpointStore(filled, readonly=True) as store:
        export_jsonl(store, out)
    return out


def test_import_into_a_fresh_store(filled: Path, exported: Path, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported, progress=lambda *args: progress.append(args))
        with CheckpointStore(filled, readonly=True) as source:
            for workflow_id in ("wf-a", "wf-b"):
                assert records_of(dest, workflow_id) == records_of(source, workflow_id)
                assert dest.workflow(workflow_id).status == source.workflow(workflow_id).status
                assert dest.workflow_extras(workflow_id) == source.workflow_extras(workflow_id)
            assert dest.latest("wf-a").state == source.latest("wf-a").state  # type: ignore[union-attr]
    assert (report.lines, report.workflows, report.imported, report.already_present) == (7, 2, 4, 0)
    assert report.statuses_set == 1  # wf-b was already running with no extras
    assert report.ok
    assert progress[-1] == (7, exported.stat().st_size)


def test_importing_again_adds_nothing(exported: Path, tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "dest") as dest:
        import_jsonl(dest, exported)
        before = {wf: (records_of(dest, wf), dest.workflow(wf)) for wf in ("wf-a", "wf-b")}
        report = import_jsonl(dest, exported)
        after = {wf: (records_of(dest, wf), dest.workflow(wf)) for wf in ("wf-a", "wf-b")}
    assert after == before  # updated_ns included: not even a status was written again
    assert (report.imported, report.already_present, report.statuses_set) == (0, 4, 0)
    assert report.ok


def test_status_is_left_alone_where_the_workflow_moved_on(exported: Path, tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "dest") as dest:
        import_jsonl(dest, exported)
        dest.set_status("wf-a", "running")
        dest.put("wf-a", {"n": 3})
        report = import_jsonl(dest, exported)
        assert dest.workflow("wf-a").status == "running"
    assert report.statuses_set == 0
    assert report.ok


def test_the_lease_is_not_exported(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "s") as store:
        store.acquire_lease("wf", create=True, extras={"entrypoint": "m:w"})
        store.put("wf", 1)
        export_jsonl(store, tmp_path / "out.jsonl")
    assert lines(tmp_path / "out.jsonl")[1]["extras"] == {"entrypoint": "m:w"}
    with CheckpointStore(tmp_path / "d") as dest:
        import_jsonl(dest, tmp_path / "out.jsonl")
        assert dest.lease("wf") is None
        assert dest.workflow_extras("wf") == {"entrypoint": "m:w"}


def test_an_edited_line_is_imported_and_reported(exported: Path, tmp_path: Path) -> None:
    records = lines(exported)
    records[2]["state"]["n"] = 41
    write_lines(exported, records)  # type: ignore[arg-type]
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
        assert dest.get("wf-a", 1).state["n"] == 41
    [problem] = report.mismatched
    assert (problem.source, problem.workflow_id, problem.seq) == ("line 3", "wf-a", 1)
    assert problem.reason.startswith("digest ")
    assert f"differs from the line's {records[2]['digest']}" in problem.reason
    assert report.imported == 4
    assert not report.ok


def test_lines_that_cannot_be_imported_are_skipped(exported: Path, tmp_path: Path) -> None:
    header, wf_a, a1, a2, a3, wf_b, b1 = lines(exported)
    write_lines(
        exported,
        [
            header,
            wf_a,
            a1,
            {**a2, "state": {"$bogus": 1}},
            a3,
            "",
            {"type": "comment"},
            "[1, 2]",
            {**wf_b, "status": "paused"},
            {k: v for k, v in b1.items() if k != "digest"},
            {**b1, "digest": "XYZ"},
            {**b1, "seq": 0},
            json.dumps(b1)[:-1].replace('"state":', '"state": NaN, "x":'),
            json.dumps(b1)[:30],
        ],
    )
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
        assert [info.seq for info in dest.history("wf-a")] == [1, 3]
        # wf-a's section lost a line: its status is not set from the file.
        assert dest.workflow("wf-a").status == "running"
        with pytest.raises(WorkflowNotFoundError):
            dest.workflow("wf-b")
    reasons = [(p.source, p.workflow_id, p.seq, p.reason) for p in report.skipped]
    assert reasons[0] == ("line 4", "wf-a", 2, "unknown type marker '$bogus'")
    assert reasons[1] == (
        "line 7",
        None,
        None,
        "not a checkpoint or workflow line (type 'comment')",
    )
    assert reasons[2] == ("line 8", None, None, "not a checkpoint or workflow line (type None)")
    assert reasons[3] == ("line 10", "wf-b", 1, "the line has no 'digest'")
    assert reasons[4] == ("line 11", "wf-b", 1, "digest 'XYZ' is not 16 lowercase hex digits")
    assert reasons[5][:3] == ("line 12", "wf-b", 0)
    assert "invalid sequence number 0" in reasons[5][3]
    assert reasons[6][0] == "line 13"
    assert "NaN is not JSON" in reasons[6][3]
    assert reasons[7][0] == "line 14"
    assert reasons[7][3].startswith("not valid JSON: ")
    assert len(reasons) == 8  # line 6 is blank
    assert report.lines == 14
    assert report.imported == 2


def test_lines_without_a_workflow_line(exported: Path, tmp_path: Path) -> None:
    """Checkpoint lines need no workflow line: they are imported, and no status is set."""
    header, wf_a, a1, a2, a3, wf_b, b1 = lines(exported)
    write_lines(exported, [header, "{", a1, wf_b, a2, a3, b1, {**wf_a, "extras": [1]}])
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
        assert [info.seq for info in dest.history("wf-a")] == [1, 2, 3]
        assert dest.workflow("wf-a").status == "running"
        assert dest.workflow_extras("wf-b") == {}
    bad_json, no_checkpoints = report.skipped
    assert (bad_json.source, bad_json.workflow_id) == ("line 2", None)
    assert bad_json.reason.startswith("not valid JSON: Expecting property name")
    assert (no_checkpoints.source, no_checkpoints.workflow_id) == ("line 8", "wf-a")
    assert no_checkpoints.reason.startswith("no checkpoint line follows")
    assert report.statuses_set == 0  # wf-b was running without extras, as in the file


def test_extras_that_are_no_object(exported: Path, tmp_path: Path) -> None:
    header, wf_a, *rest = lines(exported)
    write_lines(exported, [header, {**wf_a, "extras": [1]}, *rest])
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
    [problem] = report.skipped
    assert (problem.source, problem.reason) == ("line 2", "extras is not an object")


def test_a_bad_workflow_line_is_reported(exported: Path, tmp_path: Path) -> None:
    header, wf_a, *rest = lines(exported)
    write_lines(exported, [header, {**wf_a, "status": "paused"}, *rest])
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
        assert dest.workflow("wf-a").status == "running"
    [problem] = report.skipped
    assert (problem.source, problem.workflow_id) == ("line 2", "wf-a")
    assert problem.reason == "invalid workflow status 'paused'"


def test_checkpoint_lines_out_of_seq_order_conflict(exported: Path, tmp_path: Path) -> None:
    header, wf_a, a1, a2, a3, *rest = lines(exported)
    write_lines(exported, [header, wf_a, a1, a3, a2, *rest])
    with CheckpointStore(tmp_path / "dest") as dest:
        report = import_jsonl(dest, exported)
    [problem] = report.skipped
    assert (problem.source, problem.seq) == ("line 5", 2)
    assert "cannot import checkpoint 2" in problem.reason


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("", InterchangeError, "is not an lmdbstate export"),
        ('{"type": "checkpoint"}\n', InterchangeError, "is not an lmdbstate export"),
        ("\x00\x01binary", InterchangeError, "is not an lmdbstate export"),
        (
            '{"type": "header", "format": "lmdbstate-export", "version": 2}\n',
            UnsupportedFormatError,
            "export of format version 2; this version reads version 1",
        ),
    ],
)
def test_import_refuses_what_is_no_export(
    tmp_path: Path, content: str, error: type[Exception], message: str
) -> None:
    path = tmp_path / "file.jsonl"
    path.write_text(content)
    with CheckpointStore(MEMORY_PATH) as dest, pytest.raises(error, match=message):
        import_jsonl(dest, path)


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    with CheckpointStore(MEMORY_PATH) as dest, pytest.raises(InterchangeError) as caught:
        import_jsonl(dest, tmp_path / "missing.jsonl")
    assert (
        caught.value.message
        == f"cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    )


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_export_and_import(runner: CliRunner, filled: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out.jsonl"
    result = invoke(runner, "export", "--out", str(out), store=filled)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        rf"exported 4 checkpoints of 2 workflows to {re.escape(str(out))} \(\S+ \S+\) in \S+ s\n",
        result.stdout,
    )
    result = invoke(runner, "import", str(out), store=tmp_path / "new")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"imported 4 checkpoints of 2 workflows from {out} (")
    result = invoke(runner, "import", str(out), "--json", store=tmp_path / "new")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (data["imported"], data["already_present"], data["ok"]) == (0, 4, True)
    assert data["skipped"] == data["mismatched"] == []


def test_cli_export_json_and_its_refusals(runner: CliRunner, filled: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out.jsonl"
    result = invoke(runner, "export", "wf-b", "-o", str(out), "--json", store=filled)
    data = json.loads(result.stdout)
    assert (data["workflows"], data["checkpoints"], data["damaged"], data["ok"]) == (1, 1, [], True)
    result = invoke(runner, "export", "--out", str(out), store=filled)
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: {out} exists"
    assert invoke(runner, "export", "--out", str(out), "--force", store=filled).exit_code == 0
    result = invoke(runner, "export", "nope", "--out", str(tmp_path / "x"), store=filled)
    assert result.exit_code == 1
    assert error_lines(result)[0] == "error: workflow 'nope' not found"
    result = invoke(runner, "export", store=filled)
    assert result.exit_code == 2
    assert "Missing option '--out'" in result.stderr


def test_cli_export_of_damage_exits_3(runner: CliRunner, filled: Path, tmp_path: Path) -> None:  # noqa: F811
    key = ckpt_key("wf-b", 1)
    record = bytearray(raw_get(filled, b"ckpt", key) or b"")
    record[30] ^= 0x01
    raw_put(filled, b"ckpt", key, bytes(record))
    result = invoke(runner, "export", "--out", str(tmp_path / "o.jsonl"), store=filled)
    assert result.exit_code == 3
    assert "1 damaged checkpoints left out:" in result.stdout
    assert "wf-b" in result.stdout


def test_cli_import_reports_problems_and_exits_3(
    runner: CliRunner,  # noqa: F811
    exported: Path,
    tmp_path: Path,
) -> None:
    records = lines(exported)
    records[2]["state"]["n"] = 41
    write_lines(exported, [*records, "{torn"])  # type: ignore[list-item]
    result = invoke(runner, "import", str(exported), store=tmp_path / "dest")
    assert result.exit_code == 3
    assert "1 lines skipped:" in result.stdout
    assert "line 8" in result.stdout
    assert "1 checkpoints imported with a digest that differs from their line's:" in result.stdout
    result = invoke(runner, "import", str(exported), "--json", store=tmp_path / "dest")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert [p["source"] for p in data["skipped"]] == ["line 8"]
    assert [(p["workflow_id"], p["seq"]) for p in data["mismatched"]] == [("wf-a", 1)]


@pytest.mark.parametrize("content", [None, "not an export\n"])
def test_cli_import_of_no_export_creates_no_store(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
    content: str | None,
) -> None:
    path = tmp_path / "in.jsonl"
    if content is not None:
        path.write_text(content)
    result = invoke(runner, "import", str(path), store=tmp_path / "dest")
    assert result.exit_code == 1
    assert result.stdout == ""
    error_lines(result)
    assert not (tmp_path / "dest").exists()
