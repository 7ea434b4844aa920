"""The CLI through Typer's CliRunner, against real stores on tmp_path.

This typer's CliRunner keeps the streams apart: ``result.stdout`` is stdout only,
``result.stderr`` is stderr only, and ``result.output`` is both, interleaved.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import lmdb
import pytest
import typer
from typer.testing import CliRunner, Result

from lmdbstate import (
    Checkpointer,
    CheckpointInfo,
    CheckpointStore,
    RetentionPolicy,
    WorkflowInfo,
    __version__,
)
from lmdbstate.cli import app, main, render
from lmdbstate.interchange import export_jsonl
from lmdbstate.runner import StepRecord

from .workflows import SIMPLE, STEPS, initial, prefix_states

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = (
    "list", "show", "history", "diff", "stats", "delete", "verify", "repair", "backup", "copy",
    "gc", "compact", "recover", "export", "import", "import-legacy", "migrate", "run", "resume",
    "config", "demo",
)  # fmt: skip

STATE_1 = {"n": 1}
RICH_STATE = {
    "tuple": (1, "two"),
    "set": {10, 9, 100},
    "mixed": {1, "a", None},
    "frozen": frozenset({"b", "a"}),
    "bytes": b"\x00\xffhi",
    "when": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
    "day": dt.date(2024, 1, 2),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": Decimal("1.50"),
    7: "seven",
    "nested": [{"t": (None, True, 2.5)}],
    "nan": float("nan"),
    "inf": float("-inf"),
}
RICH_STATE_JSON = {
    "tuple": [1, "two"],
    "set": [9, 10, 100],
    "mixed": ["a", 1, None],
    "frozen": ["a", "b"],
    "bytes": {"base64": "AP9oaQ=="},
    "when": "2024-01-02T03:04:05.678000+00:00",
    "day": "2024-01-02",
    "id": "12345678-1234-5678-1234-567812345678",
    "price": "1.50",
    "7": "seven",
    "nested": [{"t": [None, True, 2.5]}],
    "nan": "nan",
    "inf": "-inf",
}
META = {"trigger": "step", "progress": (1, 4)}


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    # A fixed width, and nothing from the developer's environment leaking into the tests.
    return CliRunner(env={"COLUMNS": "120", "LMDBSTATE_PATH": None, "LMDBSTATE_DEBUG": None})


def invoke(
    runner: CliRunner,
    *args: str,
    store: Path | None = None,
    input: str | None = None,
    env: dict[str, str | None] | None = None,
) -> Result:
    """Run the CLI and check what must hold for every run: no traceback, no stray exception."""
    argv = ([] if store is None else ["--store", str(store)]) + list(args)
    result = runner.invoke(app, argv, input=input, env=env)
    for text in (result.output, result.stdout, result.stderr):
        assert "Traceback" not in text
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def error_lines(result: Result) -> list[str]:
    """The stderr of a failed command, which must be exactly an error line and a hint line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert lines[1].startswith("hint: "), result.stderr
    assert len(lines[1]) > len("hint: ")
    return lines


def iso_ms(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 10**6:03d}Z"


def table_time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000))


def checkpoint_key(workflow_id: str, seq: int) -> bytes:
    """The ``ckpt`` key as DESIGN section 3 lays it out."""
    return workflow_id.encode() + b"\x00" + seq.to_bytes(8, "big")


def damage(path: Path, db: bytes, key: bytes, offset: int) -> None:
    """Flip one byte of a stored value, bypassing lmdbstate: real damage on disk."""
    env = lmdb.open(str(path), max_dbs=8)
    try:
        handle = env.open_db(db, create=False)
        with env.begin(write=True, db=handle) as txn:
            value = bytearray(txn.get(key))
            value[offset] ^= 0xFF
            txn.put(key, bytes(value))
    finally:
        env.close()


@dataclass
class Filled:
    path: Path
    checkpoints: dict[str, list[CheckpointInfo]]
    workflows: dict[str, WorkflowInfo]


@pytest.fixture
def filled(tmp_path: Path) -> Filled:
    """A closed store: wf-a (running, 2 checkpoints), wf-b (completed), wf-c (failed)."""
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        checkpoints = {
            "wf-a": [
                store.put("wf-a", STATE_1, step="load"),
                store.put("wf-a", RICH_STATE, step=2, schema=3, meta=dict(META)),
            ],
            "wf-b": [store.put("wf-b", [1, 2, 3])],
            "wf-c": [store.put("wf-c", {"big": "x" * 3000}, step="train")],
        }
        store.set_status("wf-b", "completed")
        store.set_status("wf-c", "failed")
        workflows = {name: store.workflow(name) for name in checkpoints}
    return Filled(path, checkpoints, workflows)


def workflow_json(info: WorkflowInfo) -> dict[str, Any]:
    return {
        "workflow_id": info.workflow_id,
        "status": info.status,
        "created_ns": info.created_ns,
        "updated_ns": info.updated_ns,
        "head_seq": info.head_seq,
        "last_seq": info.last_seq,
        "checkpoints": info.checkpoints,
        "bytes": info.bytes,
        "schema": info.schema,
        "created_at": iso_ms(info.created_ns),
        "updated_at": iso_ms(info.updated_ns),
    }


def info_json(info: CheckpointInfo) -> dict[str, Any]:
    return {
        "workflow_id": info.workflow_id,
        "seq": info.seq,
        "step": info.step,
        "schema": info.schema,
        "created_ns": info.created_ns,
        "size": info.size,
        "digest": f"{info.digest:016x}",
        "created_at": iso_ms(info.created_ns),
    }


def stored(path: Path, read: Callable[[CheckpointStore], Any]) -> Any:
    with CheckpointStore(path, readonly=True) as store:
        return read(store)


# -- global options ---------------------------------------------------------------------------


def test_version(runner: CliRunner) -> None:
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"lmdbstate {__version__}\n"
    assert result.stderr == ""


def test_version_is_eager_and_needs_no_store(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "--version", "list", store=tmp_path / "missing")
    assert result.exit_code == 0
    assert result.stdout == f"lmdbstate {__version__}\n"
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_command_and_global_option(runner: CliRunner, flag: str) -> None:
    result = invoke(runner, flag)
    assert result.exit_code == 0
    assert "Usage: lmdbstate [OPTIONS] COMMAND [ARGS]..." in result.stdout
    assert "Exit codes: 0 ok, 1 error, 2 usage error, 3 damage found." in result.stdout
    for text in ("--store", "-s", "LMDBSTATE_PATH", ".lmdbstate", "--version", "-h", *COMMANDS):
        assert text in result.stdout
    # The width is fixed at 120 columns: no line of the help is wider.
    assert max(len(line) for line in result.stdout.splitlines()) == 120


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help(runner: CliRunner, command: str, flag: str) -> None:
    result = invoke(runner, command, flag)
    assert result.exit_code == 0
    assert f"Usage: lmdbstate {command} [OPTIONS]" in result.stdout
    summary = typer.main.get_command(app).commands[command].help  # type: ignore[attr-defined]
    assert summary.split("\n\n")[0] in " ".join(result.stdout.split())


def test_no_command_prints_help_and_is_a_usage_error(runner: CliRunner) -> None:
    result = invoke(runner)
    assert result.exit_code == 2
    assert "Usage: lmdbstate [OPTIONS] COMMAND [ARGS]..." in result.stdout


def test_unknown_command_and_option_are_usage_errors(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "frobnicate", store=filled.path)
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr
    result = invoke(runner, "list", "--colour", store=filled.path)
    assert result.exit_code == 2
    assert "--colour" in result.stderr
    assert result.stdout == ""


def test_missing_argument_is_a_usage_error(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", store=filled.path)
    assert result.exit_code == 2
    assert "Missing argument 'WORKFLOW_ID'" in result.stderr


def _listed(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [entry["workflow_id"] for entry in json.loads(result.stdout)]


def test_store_comes_from_option_then_env_var_then_default(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("from-env", "from-option", ".lmdbstate"):
        with CheckpointStore(tmp_path / name) as store:
            store.put(f"wf-{name}", {})
    monkeypatch.chdir(tmp_path)
    env_store = {"LMDBSTATE_PATH": str(tmp_path / "from-env")}

    assert _listed(invoke(runner, "list", "--json")) == ["wf-.lmdbstate"]
    assert _listed(invoke(runner, "list", "--json", env=env_store)) == ["wf-from-env"]
    option = ["--store", str(tmp_path / "from-option"), "list", "--json"]
    assert _listed(invoke(runner, *option, env=env_store)) == ["wf-from-option"]
    short = ["-s", str(tmp_path / "from-option"), "list", "--json"]
    assert _listed(invoke(runner, *short)) == ["wf-from-option"]


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["show", "wf"],
        ["show", "wf", "--seq", "1", "--json"],
        ["history", "wf"],
        ["stats", "--json"],
        ["delete", "wf"],
        ["delete", "wf", "--yes"],
    ],
)
def test_missing_store_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    result = invoke(runner, *args, store=missing)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = error_lines(result)
    assert lines[0] == f"error: no store at {missing.resolve()}"
    # No command creates a store, not even delete, which opens it writable.
    assert not missing.exists()


def test_missing_default_store_names_its_path(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "stats")
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: no store at {tmp_path.resolve() / '.lmdbstate'}"


def test_store_path_that_is_a_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a store")
    result = invoke(runner, "list", store=path)
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: {path.resolve()} is not a directory"


def test_unreadable_store_files_are_damage(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    path.mkdir()
    (path / "data.mdb").write_bytes(bytes(range(256)) * 64)
    result = invoke(runner, "list", store=path)
    assert result.exit_code == 3
    assert error_lines(result)[0].startswith(f"error: store {path.resolve()} is damaged: ")


# -- list -------------------------------------------------------------------------------------


def test_list_json(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "list", "--json", store=filled.path)
    assert result.exit_code == 0
    assert result.stderr == ""
    listed = json.loads(result.stdout)
    assert listed == [workflow_json(filled.workflows[name]) for name in ("wf-a", "wf-b", "wf-c")]
    first = listed[0]
    assert (first["status"], first["head_seq"], first["last_seq"]) == ("running", 2, 2)
    assert (first["checkpoints"], first["schema"]) == (2, 3)
    assert first["bytes"] == sum(info.size for info in filled.checkpoints["wf-a"])


@pytest.mark.parametrize(
    ("status", "expected"),
    [("running", ["wf-a"]), ("completed", ["wf-b"]), ("failed", ["wf-c"]), ("cancelled", [])],
)
def test_list_by_status(
    runner: CliRunner, filled: Filled, status: str, expected: list[str]
) -> None:
    result = invoke(runner, "list", "--status", status, "--json", store=filled.path)
    assert json.loads(result.stdout) == [workflow_json(filled.workflows[n]) for n in expected]


def test_list_table(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "list", store=filled.path)
    assert result.exit_code == 0
    header = re.search(
        r"workflow\s+┃\s+status\s+┃\s+checkpoints\s+┃\s+head\s+┃\s+bytes", result.stdout
    )
    assert header is not None
    for name, status, count in (("wf-a", "running", 2), ("wf-b", "completed", 1)):
        info = filled.workflows[name]
        row = (
            rf"│ {name}\s+│ {status}\s+│ {count}\s+│ {info.head_seq}\s+│ {info.bytes} B\s+"
            rf"│ {table_time(info.updated_ns)}\s+│"
        )
        assert re.search(row, result.stdout), result.stdout
    # wf-c holds more than 1 KiB: sizes are shown in binary units.
    assert re.search(r"│ wf-c\s+│ failed\s+│ 1\s+│ 1\s+│ 3\.\d KiB", result.stdout)


def test_list_table_filtered(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "list", "--status", "completed", store=filled.path)
    assert "wf-b" in result.stdout
    assert "wf-a" not in result.stdout
    assert "wf-c" not in result.stdout


def test_list_of_an_empty_store(runner: CliRunner, tmp_path: Path) -> None:
    CheckpointStore(tmp_path / "empty").close()
    result = invoke(runner, "list", store=tmp_path / "empty")
    assert (result.exit_code, result.stdout) == (0, "no workflows\n")
    result = invoke(runner, "list", "--json", store=tmp_path / "empty")
    assert json.loads(result.stdout) == []
    result = invoke(runner, "list", "--status", "failed", store=tmp_path / "empty")
    assert (result.exit_code, result.stdout) == (0, "no workflows\n")


@pytest.mark.parametrize("value", ["bogus", "RUNNING", ""])
def test_list_unknown_status_is_a_usage_error(
    runner: CliRunner, filled: Filled, value: str
) -> None:
    result = invoke(runner, "list", "--status", value, store=filled.path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--status'" in result.stderr
    for status in ("running", "completed", "failed", "cancelled"):
        assert status in result.stderr


# -- show -------------------------------------------------------------------------------------


def test_show_json_renders_every_state_type(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-a", "--json", store=filled.path)
    assert result.exit_code == 0
    assert result.stderr == ""
    newest = filled.checkpoints["wf-a"][1]
    shown = json.loads(result.stdout)
    assert shown == {
        **info_json(newest),
        "digest_ok": True,
        "record_format": 1,
        "meta": {"trigger": "step", "progress": [1, 4]},
        "state": RICH_STATE_JSON,
    }
    assert (shown["seq"], shown["step"], shown["schema"]) == (2, 2, 3)
    # Strict JSON: NaN and infinities were turned into strings.
    assert "NaN" not in result.stdout
    assert "Infinity" not in result.stdout


def test_show_seq_json(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-a", "--seq", "1", "--json", store=filled.path)
    assert result.exit_code == 0
    first = filled.checkpoints["wf-a"][0]
    assert json.loads(result.stdout) == {
        **info_json(first),
        "digest_ok": True,
        "record_format": 1,
        "meta": {},
        "state": STATE_1,
    }


def test_show_of_a_list_state_without_step(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-b", "--json", store=filled.path)
    shown = json.loads(result.stdout)
    assert (shown["step"], shown["state"]) == (None, [1, 2, 3])


def test_show_table(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-a", store=filled.path)
    assert result.exit_code == 0
    out = result.stdout
    newest = filled.checkpoints["wf-a"][1]
    for name, value in (
        ("workflow", "wf-a"),
        ("seq", "2"),
        ("step", "2"),
        ("schema", "3"),
        ("created", iso_ms(newest.created_ns)),
        ("size", f"{newest.size} B"),
        ("digest", f"{newest.digest:016x} ok"),
    ):
        assert re.search(rf"^{name}\s+{re.escape(value)}\s*$", out, re.MULTILINE), (name, out)
    assert re.search(r"^meta$", out, re.MULTILINE)
    assert "'trigger': 'step'" in out
    assert re.search(r"^state$", out, re.MULTILINE)
    for text in ("'tuple': (1, 'two')", "b'\\x00\\xffhi'", "Decimal('1.50')", "7: 'seven'"):
        assert text in out


def test_show_table_of_an_older_seq_without_meta(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-a", "--seq", "1", store=filled.path)
    assert result.exit_code == 0
    assert re.search(r"^step\s+load\s*$", result.stdout, re.MULTILINE)
    assert not re.search(r"^meta$", result.stdout, re.MULTILINE)
    assert "{'n': 1}" in result.stdout


def test_show_missing_workflow(runner: CliRunner, filled: Filled) -> None:
    for args in (["show", "nope"], ["show", "nope", "--seq", "1", "--json"]):
        result = invoke(runner, *args, store=filled.path)
        assert result.exit_code == 1
        assert result.stdout == ""
        lines = error_lines(result)
        assert lines[0] == "error: workflow 'nope' not found"
        assert "lmdbstate list" in lines[1]


def test_show_missing_seq(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "wf-a", "--seq", "9", store=filled.path)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = error_lines(result)
    assert lines[0] == "error: checkpoint 9 of workflow 'wf-a' not found"
    assert "lmdbstate history" in lines[1]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_show_bad_seq_is_a_usage_error(runner: CliRunner, filled: Filled, value: str) -> None:
    result = invoke(runner, "show", "wf-a", "--seq", value, store=filled.path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--seq'" in result.stderr


def test_show_workflow_without_checkpoints(runner: CliRunner, filled: Filled) -> None:
    with CheckpointStore(filled.path) as store:
        store.delete("wf-b", seq=1)
    result = invoke(runner, "show", "wf-b", store=filled.path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert error_lines(result)[0] == "error: workflow 'wf-b' has no checkpoints"


def test_show_invalid_workflow_id(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "show", "", store=filled.path)
    assert result.exit_code == 1
    assert error_lines(result)[0] == "error: invalid workflow id '': empty"


# One byte in each field of the record header (DESIGN section 4), and one in the body.
RECORD_OFFSETS = {
    "magic": 0,
    "format": 2,
    "flags": 3,
    "digest": 5,
    "created": 16,
    "body-length": 21,
    "body": -1,
}


@pytest.mark.parametrize("offset", RECORD_OFFSETS.values(), ids=RECORD_OFFSETS.keys())
def test_show_damaged_checkpoint_exits_3(runner: CliRunner, filled: Filled, offset: int) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 2), offset)
    for args in (["show", "wf-a"], ["show", "wf-a", "--json"], ["show", "wf-a", "--seq", "2"]):
        result = invoke(runner, *args, store=filled.path)
        assert result.exit_code == 3, result.output
        assert result.stdout == ""
        lines = error_lines(result)
        assert lines[0].startswith("error: checkpoint 2 of workflow 'wf-a' is damaged: ")
    # The intact older checkpoint still reads, and other workflows are untouched.
    result = invoke(runner, "show", "wf-a", "--seq", "1", "--json", store=filled.path)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["state"] == STATE_1
    assert invoke(runner, "show", "wf-b", store=filled.path).exit_code == 0


def test_history_lists_the_intact_checkpoints_and_exits_3_on_damage(
    runner: CliRunner, filled: Filled
) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 1), -1)
    result = invoke(runner, "history", "wf-a", "--json", store=filled.path)
    assert result.exit_code == 3
    assert error_lines(result)[0].startswith("error: 1 damaged: seq 1 (")
    rows = json.loads(result.stdout)
    assert [row["seq"] for row in rows] == [2, 1]
    assert rows[0]["digest"] == f"{filled.checkpoints['wf-a'][1].digest:016x}"
    assert isinstance(rows[1]["damaged"], str)
    assert rows[1]["damaged"]
    table = invoke(runner, "history", "wf-a", "--reverse", store=filled.path)
    assert table.exit_code == 3
    assert f"{filled.checkpoints['wf-a'][1].digest:016x}" in table.stdout
    assert f"{filled.checkpoints['wf-a'][0].digest:016x}" not in table.stdout


def test_damaged_index_entry_exits_3(runner: CliRunner, filled: Filled) -> None:
    damage(filled.path, b"wf", b"wf-b", 0)
    for args in (["list"], ["list", "--json"], ["stats"]):
        result = invoke(runner, *args, store=filled.path)
        assert result.exit_code == 3
        assert result.stdout == ""
        assert error_lines(result)[0] == "error: the index entry of workflow 'wf-b' is damaged"


# -- history ----------------------------------------------------------------------------------


def test_history_json(runner: CliRunner, filled: Filled) -> None:
    infos = [info_json(info) for info in filled.checkpoints["wf-a"]]
    cases: list[tuple[list[str], list[dict[str, Any]]]] = [
        ([], infos),
        (["--reverse"], infos[::-1]),
        (["-r"], infos[::-1]),
        (["--limit", "1"], infos[:1]),
        (["-n", "1"], infos[:1]),
        (["--reverse", "--limit", "1"], infos[1:]),
        (["--limit", "5"], infos),
        (["--limit", "0"], []),
    ]
    for args, expected in cases:
        result = invoke(runner, "history", "wf-a", *args, "--json", store=filled.path)
        assert result.exit_code == 0
        assert result.stderr == ""
        assert json.loads(result.stdout) == expected, args
    assert [entry["step"] for entry in infos] == ["load", 2]


def test_history_table(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "history", "wf-a", "--reverse", store=filled.path)
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    expected = []
    for info in filled.checkpoints["wf-a"][::-1]:
        expected.append(
            [str(info.seq), str(info.step), str(info.schema), table_time(info.created_ns),
             f"{info.size} B", f"{info.digest:016x}"]
        )  # fmt: skip
    assert [[cell.strip() for cell in row.strip("│").split("│")] for row in rows] == expected


def test_history_without_checkpoints(runner: CliRunner, filled: Filled) -> None:
    with CheckpointStore(filled.path) as store:
        store.delete("wf-b", seq=1)
    result = invoke(runner, "history", "wf-b", store=filled.path)
    assert (result.exit_code, result.stdout) == (0, "no checkpoints\n")
    result = invoke(runner, "history", "wf-b", "--json", store=filled.path)
    assert json.loads(result.stdout) == []


def test_history_missing_workflow(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "history", "nope", "--json", store=filled.path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert error_lines(result)[0] == "error: workflow 'nope' not found"


@pytest.mark.parametrize("value", ["-1", "many"])
def test_history_bad_limit_is_a_usage_error(runner: CliRunner, filled: Filled, value: str) -> None:
    result = invoke(runner, "history", "wf-a", "--limit", value, store=filled.path)
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr


# -- stats ------------------------------------------------------------------------------------


def test_stats_json(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "stats", "--json", store=filled.path)
    assert result.exit_code == 0
    assert result.stderr == ""
    report = json.loads(result.stdout)
    every = [info for infos in filled.checkpoints.values() for info in infos]
    oldest = min(info.created_ns for info in every)
    newest = max(info.created_ns for info in every)
    by_size = sorted(filled.workflows.values(), key=lambda info: info.bytes, reverse=True)
    assert len({info.bytes for info in by_size}) == 3  # no ties: the order is certain
    storage = {
        name: report.pop(name)
        for name in (
            "live_bytes", "file_bytes", "map_size", "max_map_size", "page_size", "readers_used",
            "max_readers",
        )
    }  # fmt: skip
    assert report == {
        "path": str(filled.path.resolve()),
        "durability": "sync",
        "format_version": 2,
        "workflows": 3,
        "workflows_by_status": {"running": 1, "completed": 1, "failed": 1, "cancelled": 0},
        "checkpoints": 4,
        "record_bytes": sum(info.size for info in every),
        "oldest_ns": oldest,
        "newest_ns": newest,
        "oldest_at": iso_ms(oldest),
        "newest_at": iso_ms(newest),
        "largest": [workflow_json(info) for info in by_size],
        "gc_preview": None,  # no retention policy configured
    }
    assert all(type(value) is int for value in storage.values())
    assert storage["page_size"] > 0
    assert 0 < storage["live_bytes"] <= storage["file_bytes"] <= storage["map_size"]
    assert storage["map_size"] <= storage["max_map_size"]
    assert 0 <= storage["readers_used"] <= storage["max_readers"]
    assert storage["live_bytes"] % storage["page_size"] == 0


def test_stats_table(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "stats", store=filled.path)
    assert result.exit_code == 0
    out = result.stdout
    record_bytes = sum(info.size for infos in filled.checkpoints.values() for info in infos)
    assert 1024 < record_bytes < 10 * 1024
    for name, value in (
        ("store", str(filled.path.resolve())),
        ("format", "2"),
        ("workflows", "3 (1 running, 1 completed, 1 failed, 0 cancelled)"),
        ("checkpoints", "4"),
        ("record bytes", f"{record_bytes / 1024:.1f} KiB"),
    ):
        assert re.search(rf"^{name}\s+{re.escape(value)}\s*$", out, re.MULTILINE), (name, out)
    assert re.search(r"^map size\s+\d+\.\d (K|M|G|T)iB \(max \d+\.\d (K|M|G|T)iB\)", out, re.M)
    assert re.search(r"^page size\s+\d+\.\d KiB\s*$", out, re.MULTILINE)
    assert re.search(r"^readers\s+\d+ of \d+\s*$", out, re.MULTILINE)
    assert "largest workflows" in out
    largest = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert largest == ["wf-c", "wf-a", "wf-b"]


def test_stats_of_an_empty_store(runner: CliRunner, tmp_path: Path) -> None:
    CheckpointStore(tmp_path / "empty").close()
    result = invoke(runner, "stats", "--json", store=tmp_path / "empty")
    report = json.loads(result.stdout)
    assert (report["workflows"], report["checkpoints"], report["largest"]) == (0, 0, [])
    assert (report["oldest_ns"], report["oldest_at"], report["newest_at"]) == (None, "-", "-")
    result = invoke(runner, "stats", store=tmp_path / "empty")
    assert result.exit_code == 0
    assert re.search(r"^oldest\s+-\s*$", result.stdout, re.MULTILINE)
    assert "largest workflows" not in result.stdout


# -- delete -----------------------------------------------------------------------------------


def _workflow_ids(path: Path) -> list[str]:
    return stored(path, lambda store: [info.workflow_id for info in store.workflows()])


def test_delete_with_yes(runner: CliRunner, filled: Filled) -> None:
    for flag in ("--yes", "-y"):
        name = "wf-a" if flag == "--yes" else "wf-c"
        result = invoke(runner, "delete", name, flag, store=filled.path)
        assert result.exit_code == 0
        count = len(filled.checkpoints[name])
        plural = "s" if count != 1 else ""
        assert result.stdout == f"deleted workflow '{name}' ({count} checkpoint{plural})\n"
        assert result.stderr == ""
    assert _workflow_ids(filled.path) == ["wf-b"]


def test_delete_asks_and_deletes_on_yes(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "delete", "wf-a", store=filled.path, input="y\n")
    assert result.exit_code == 0
    assert result.stdout == (
        "Delete workflow 'wf-a'? [y/N]: y\ndeleted workflow 'wf-a' (2 checkpoints)\n"
    )
    assert _workflow_ids(filled.path) == ["wf-b", "wf-c"]


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "no\n"])
def test_delete_keeps_everything_unless_confirmed(
    runner: CliRunner, filled: Filled, answer: str
) -> None:
    result = invoke(runner, "delete", "wf-a", store=filled.path, input=answer)
    assert result.exit_code == 1
    assert result.stdout.startswith("Delete workflow 'wf-a'? [y/N]: ")
    assert "deleted workflow" not in result.stdout
    assert error_lines(result)[0] == "error: nothing deleted"
    assert _workflow_ids(filled.path) == ["wf-a", "wf-b", "wf-c"]
    assert stored(filled.path, lambda store: store.workflow("wf-a").checkpoints) == 2


def test_delete_one_checkpoint(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "delete", "wf-a", "--seq", "2", store=filled.path, input="y\n")
    assert result.exit_code == 0
    assert result.stdout == (
        "Delete checkpoint 2 of 'wf-a'? [y/N]: y\ndeleted checkpoint 2 of 'wf-a' (1 checkpoint)\n"
    )
    history = invoke(runner, "history", "wf-a", "--json", store=filled.path)
    assert json.loads(history.stdout) == [info_json(filled.checkpoints["wf-a"][0])]
    listed = json.loads(invoke(runner, "list", "--json", store=filled.path).stdout)
    assert (listed[0]["head_seq"], listed[0]["last_seq"], listed[0]["checkpoints"]) == (1, 2, 1)


def test_delete_one_checkpoint_declined(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "delete", "wf-a", "--seq", "1", store=filled.path, input="n\n")
    assert result.exit_code == 1
    assert error_lines(result)[0] == "error: nothing deleted"
    assert stored(filled.path, lambda store: store.workflow("wf-a").checkpoints) == 2


def test_delete_missing_workflow_fails_before_asking(runner: CliRunner, filled: Filled) -> None:
    for extra in ([], ["--seq", "1"], ["--yes"]):
        result = invoke(runner, "delete", "nope", *extra, store=filled.path, input="y\n")
        assert result.exit_code == 1
        assert result.stdout == ""  # no question was asked
        lines = error_lines(result)
        assert lines[0] == "error: workflow 'nope' not found"
    assert _workflow_ids(filled.path) == ["wf-a", "wf-b", "wf-c"]


def test_delete_missing_checkpoint(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "delete", "wf-a", "--seq", "9", "--yes", store=filled.path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert error_lines(result)[0] == "error: checkpoint 9 of workflow 'wf-a' not found"
    assert stored(filled.path, lambda store: store.workflow("wf-a").checkpoints) == 2


@pytest.mark.parametrize("value", ["0", "x"])
def test_delete_bad_seq_is_a_usage_error(runner: CliRunner, filled: Filled, value: str) -> None:
    result = invoke(runner, "delete", "wf-a", "--seq", value, "--yes", store=filled.path)
    assert result.exit_code == 2
    assert "Invalid value for '--seq'" in result.stderr
    assert stored(filled.path, lambda store: store.workflow("wf-a").checkpoints) == 2


def test_delete_a_damaged_checkpoint(runner: CliRunner, filled: Filled) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 2), -1)
    assert invoke(runner, "show", "wf-a", store=filled.path).exit_code == 3
    result = invoke(runner, "delete", "wf-a", "--seq", "2", "--yes", store=filled.path)
    assert result.exit_code == 0
    result = invoke(runner, "show", "wf-a", "--json", store=filled.path)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["seq"] == 1


# -- errors and rendering ---------------------------------------------------------------------


def test_unexpected_error_is_one_line_without_traceback(
    runner: CliRunner, filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: CheckpointStore) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CheckpointStore, "stats", broken)
    result = invoke(runner, "stats", store=filled.path)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = error_lines(result)
    assert lines[0] == "error: internal error: RuntimeError: boom"
    assert "LMDBSTATE_DEBUG=1" in lines[1]


def test_debug_lets_an_unexpected_error_through(
    runner: CliRunner, filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: CheckpointStore) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CheckpointStore, "stats", broken)
    argv = ["--store", str(filled.path), "stats"]
    result = runner.invoke(app, argv, env={"LMDBSTATE_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_ids_and_steps_are_printed_as_they_are(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "store[x]"
    names = ["etl[/]", "job[bold]1", "[red]x[/red]"]
    with CheckpointStore(path) as store:
        for name in names:
            store.put(name, {"k": "[bold]v[/bold]"}, step="[/step]")
    listed = invoke(runner, "list", store=path)
    stats = invoke(runner, "stats", store=path)
    assert (listed.exit_code, stats.exit_code) == (0, 0)
    assert str(path.resolve()) in stats.stdout
    for name in names:
        assert f"│ {name} " in listed.stdout
        assert f"│ {name} " in stats.stdout
        shown = invoke(runner, "show", name, store=path)
        assert shown.exit_code == 0
        assert re.search(rf"^workflow\s+{re.escape(name)}\s*$", shown.stdout, re.MULTILINE)
        assert re.search(r"^step\s+\[/step\]\s*$", shown.stdout, re.MULTILINE)
        assert "'[bold]v[/bold]'" in shown.stdout
        history = invoke(runner, "history", name, store=path)
        assert "│ [/step] " in history.stdout
        deleted = invoke(runner, "delete", name, "--yes", store=path)
        assert deleted.stdout == f"deleted workflow {name!r} (1 checkpoint)\n"


def test_json_output_is_unicode(runner: CliRunner, tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "s") as store:
        store.put("café-☕", {"name": "Zoë"}, step="naïve")
    result = invoke(runner, "show", "café-☕", "--json", store=tmp_path / "s")
    assert '"Zoë"' in result.stdout
    shown = json.loads(result.stdout)
    assert (shown["workflow_id"], shown["step"], shown["state"]) == (
        "café-☕",
        "naïve",
        {"name": "Zoë"},
    )


def test_timestamps_are_truncated_not_rounded() -> None:
    # 1_700_000_000 s is 2023-11-14T22:13:20Z; a float division would round into the next second.
    ns = 1_700_000_000_999_999_999
    assert render.timestamp(ns) == "2023-11-14T22:13:20.999Z"
    assert render.short_time(ns) == "2023-11-14 22:13:20"
    assert render.timestamp(None) == "-"


def test_human_bytes() -> None:
    assert [render.human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]


# -- the reference in docs/cli.md -------------------------------------------------------------


def _sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOCS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {part.splitlines()[0].strip(): part for part in parts[1:]}


def _summary(help_text: str) -> str:
    return " ".join(inspect.cleandoc(help_text).split("\n\n")[0].split())


def _check_section(name: str, command: Any, section: str) -> None:
    """The command's help summary, and each of its arguments and options, are in ``section``."""
    assert command.help, f"{name} has no help"
    assert command.help.strip(), f"{name} has no help"
    flat = " ".join(section.split())
    assert _summary(command.help) in flat, f"{name}: the help summary is not in its section"
    assert f"lmdbstate {name}" in section
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument):
            assert f"`{param.metavar or param.name.upper()}`" in section, (name, param.name)
        else:
            long_names = [opt for opt in param.opts + param.secondary_opts if "--" in opt]
            assert long_names, (name, param.name)
            for opt in long_names:
                assert f"`{opt}`" in section, f"{name}: {opt} is not in its section"
        assert param.help, f"{name}: {param.name} has no help"
        assert param.help in flat, f"{name}: the help of {param.name} is not in its section"


def test_every_command_has_help_and_a_complete_reference_section() -> None:
    sections = _sections()
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert sorted(commands) == sorted(COMMANDS)
    for name, command in commands.items():
        section = sections.get(f"lmdbstate {name}")
        assert section is not None, f"docs/cli.md has no '## lmdbstate {name}' section"
        _check_section(name, command, section)
        # A group's subcommands are described in its section, each under its own heading.
        for sub_name, sub in getattr(command, "commands", {}).items():
            heading = f"### lmdbstate {name} {sub_name}\n"
            assert heading in section, f"docs/cli.md has no '{heading.strip()}'"
            subsection = heading + section.split(heading)[1].split("\n### ")[0]
            _check_section(f"{name} {sub_name}", sub, subsection)


def test_reference_has_no_section_for_a_missing_command() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for heading in _sections():
        if heading.startswith("lmdbstate "):
            assert heading.removeprefix("lmdbstate ") in commands, heading


def test_reference_covers_global_options_and_exit_codes() -> None:
    sections = _sections()
    root = typer.main.get_command(app)
    global_options = " ".join(sections["Global options"].split())
    for param in root.params:
        for opt in param.opts + param.secondary_opts:
            assert f"`{opt}`" in global_options, opt
        assert param.help, param.name
        assert param.help in global_options, param.name
    assert "`LMDBSTATE_PATH`" in global_options
    assert "`-h`, `--help`" in global_options
    exit_codes = sections["Exit codes"]
    for code in range(4):
        assert re.search(rf"^\| {code} \| \w", exit_codes, re.MULTILINE), code


# -- verify, repair, backup -------------------------------------------------------------------


def test_verify_a_clean_store(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "verify", store=filled.path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 4 checkpoints")
    assert "in 3 workflows" in result.stdout
    report = json.loads(invoke(runner, "verify", "--deep", "--json", store=filled.path).stdout)
    assert (report["ok"], report["records"], report["workflows"], report["deep"]) == (
        True,
        4,
        3,
        True,
    )
    assert report["damaged"] == report["index_problems"] == []
    one = json.loads(invoke(runner, "verify", "wf-a", "--json", store=filled.path).stdout)
    assert (one["records"], one["workflows"]) == (2, 1)


def test_verify_lists_each_damaged_record_and_exits_3(runner: CliRunner, filled: Filled) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 2), 30)
    damage(filled.path, b"ckpt", checkpoint_key("wf-c", 1), -1)
    before = (filled.path / "data.mdb").read_bytes()
    result = invoke(runner, "verify", "--json", store=filled.path)
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(d["workflow_id"], d["seq"], d["key"]) for d in report["damaged"]] == [
        ("wf-a", 2, checkpoint_key("wf-a", 2).hex()),
        ("wf-c", 1, checkpoint_key("wf-c", 1).hex()),
    ]
    assert all(d["reason"].startswith("digest mismatch") for d in report["damaged"])
    table = invoke(runner, "verify", store=filled.path)
    assert table.exit_code == 3
    assert table.stdout.startswith("DAMAGE FOUND: 4 checkpoints")
    assert "2 damaged checkpoints" in table.stdout
    assert "lmdbstate repair" in table.stdout
    assert (filled.path / "data.mdb").read_bytes() == before


def test_repair_then_verify_is_clean(runner: CliRunner, filled: Filled, tmp_path: Path) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 2), 30)
    result = invoke(
        runner, "repair", "--backup", str(tmp_path / "bak"), "--json", store=filled.path
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backup_path"] == str(tmp_path / "bak")
    assert [(d["workflow_id"], d["seq"]) for d in report["removed"]] == [("wf-a", 2)]
    assert (report["workflows_rebuilt"], report["age_removed"]) == (1, 1)
    assert invoke(runner, "verify", store=filled.path).exit_code == 0
    assert invoke(runner, "verify", store=tmp_path / "bak").exit_code == 3  # the backup as it was
    history = json.loads(invoke(runner, "history", "wf-a", "--json", store=filled.path).stdout)
    assert [row["seq"] for row in history] == [1]


def test_repair_of_a_missing_store_creates_nothing(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "repair", store=tmp_path / "nowhere")
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: no store at {tmp_path / 'nowhere'}"
    assert not (tmp_path / "nowhere").exists()


def test_backup_writes_a_store_that_verifies(
    runner: CliRunner, filled: Filled, tmp_path: Path
) -> None:
    result = invoke(runner, "backup", str(tmp_path / "copy"), "--json", store=filled.path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"backup": str(tmp_path / "copy")}
    copied = json.loads(invoke(runner, "list", "--json", store=tmp_path / "copy").stdout)
    assert copied == [workflow_json(filled.workflows[name]) for name in ("wf-a", "wf-b", "wf-c")]
    again = invoke(runner, "backup", str(tmp_path / "copy"), store=filled.path)
    assert again.exit_code == 1
    assert error_lines(again)[0] == f"error: {tmp_path / 'copy'} already exists"


def test_recover_copies_every_intact_checkpoint(
    runner: CliRunner, filled: Filled, tmp_path: Path
) -> None:
    damage(filled.path, b"ckpt", checkpoint_key("wf-a", 2), 30)
    result = invoke(runner, "recover", str(filled.path), str(tmp_path / "new"), "--json")
    assert result.exit_code == 3, result.output  # something was lost
    report = json.loads(result.stdout)
    assert (report["recovered"], report["from_scan"], report["complete"]) == (3, 0, False)
    assert [(d["workflow_id"], d["seq"]) for d in report["damaged"]] == [("wf-a", 2)]
    lost = {w["workflow_id"]: w["lost"] for w in report["workflows"]}
    assert lost == {"wf-a": 1, "wf-b": 0, "wf-c": 0}
    assert invoke(runner, "verify", store=tmp_path / "new").exit_code == 0
    table = invoke(runner, "recover", str(tmp_path / "new"), str(tmp_path / "again"))
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("recovered 3 checkpoints into")


def test_recover_refuses_a_used_destination(runner: CliRunner, filled: Filled) -> None:
    result = invoke(runner, "recover", str(filled.path), str(filled.path))
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: {filled.path} already exists"


# -- run, resume, config, demo ------------------------------------------------------------------

ENTRYPOINT = "tests.workflows:SIMPLE"


def test_run_prints_a_line_per_step_and_the_result(runner: CliRunner, tmp_path: Path) -> None:
    store = tmp_path / "new"
    args = ["run", ENTRYPOINT, "--id", "wf", "--state", '{"log": [], "acc": 1, "pad": ""}']
    result = invoke(runner, *args, "--policy", "every_n_steps", "--interval", "4", store=store)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == STEPS
    assert re.fullmatch(r"step 1/10 s00: \d+\.\d{3} s", lines[0])
    assert re.fullmatch(r"step 4/10 s03: \d+\.\d{3} s, checkpoint 2 \(step_count\)", lines[3])
    assert lines[-1].endswith(", checkpoint 4 (final)")
    assert result.stdout == (
        "steps run: s00, s01, s02, s03, s04, s05, s06, s07, s08, s09\n"
        "checkpoints written: 1, 2, 3, 4\n"
        "workflow 'wf' completed\n"
    )
    extras = stored(store, lambda s: s.workflow_extras("wf"))
    assert extras["entrypoint"] == ENTRYPOINT
    assert extras["policy"] == {"name": "every_n_steps", "interval": 4}


def test_run_json(runner: CliRunner, tmp_path: Path) -> None:
    state = json.dumps(initial())
    result = invoke(
        runner, "run", ENTRYPOINT, "--id", "wf", "--state", state, "--json", store=tmp_path
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["state"] == prefix_states(STEPS)[-1]
    assert (data["workflow_id"], data["status"], data["resumed_from"]) == ("wf", "completed", None)
    assert data["steps_run"] == list(SIMPLE.step_names)
    assert [c["seq"] for c in data["checkpoints"]] == list(range(1, 12))  # start + every step
    assert data["checkpoints"][0]["step"] is None


def test_run_takes_the_configured_policy(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [*sys.path])  # run puts the working directory on it
    (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "manual"\npath = "ckpt"\n')
    result = invoke(runner, "run", ENTRYPOINT, "--id", "wf", "--state", json.dumps(initial()))
    assert result.exit_code == 0, result.output
    assert "checkpoints written: 1, 2, 3\n" in result.stdout  # start, s05's request, final
    assert stored(tmp_path / "ckpt", lambda s: s.workflow_extras("wf")["policy"]["name"]) == (
        "manual"
    )
    # The configured path is the store of every command that names none.
    assert _listed(invoke(runner, "list", "--json")) == ["wf"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--state", "{nope"], "Invalid value for '--state': not valid JSON"),
        (["--policy", "hourly"], "Invalid value for '--policy'"),
        (["--interval", "x"], "Invalid value for '--interval'"),
    ],
)
def test_run_usage_errors(
    runner: CliRunner, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = invoke(runner, "run", ENTRYPOINT, "--id", "wf", *args, store=tmp_path / "s")
    assert result.exit_code == 2
    assert fragment in " ".join(result.stderr.replace("│", " ").split())
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--policy", "every_n_steps"],
            "error: checkpoint_interval from default: the every_n_steps policy (from argument) "
            "needs a whole number of steps, got None",
        ),
        (
            ["--policy", "every_n_steps", "--interval", "2.5"],
            "error: checkpoint_interval from argument: the every_n_steps policy (from argument) "
            "needs a whole number of steps, got 2.5",
        ),
        (
            ["--state", "[]"],
            "error: step 's00' of workflow 'wf' failed: TypeError: 'list' object is not a mapping",
        ),
    ],
)
def test_run_errors(runner: CliRunner, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(runner, "run", ENTRYPOINT, "--id", "wf", *args, store=tmp_path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[-2] == message
    assert lines[-1].startswith("hint: ")


def test_run_of_a_bad_entrypoint_or_a_taken_id(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "run", "tests.workflows:NOPE", "--id", "wf", store=tmp_path)
    assert result.exit_code == 1
    assert error_lines(result)[0].startswith("error: cannot load entrypoint 'tests.workflows:NOPE'")
    state = json.dumps(initial())
    assert (
        invoke(runner, "run", ENTRYPOINT, "--id", "wf", "--state", state, store=tmp_path).exit_code
        == 0
    )
    again = invoke(runner, "run", ENTRYPOINT, "--id", "wf", store=tmp_path)
    assert again.exit_code == 1
    assert error_lines(again)[0] == "error: workflow 'wf' is completed"


def crashed(path: Path, workflow_id: str, done: int) -> None:
    """SIMPLE started by entrypoint, then stopped after ``done`` steps as a killed run is."""
    with CheckpointStore(path) as store:
        checkpointer = Checkpointer(store, workflow_id, total_steps=STEPS)
        checkpointer.start(initial(), extras={"entrypoint": ENTRYPOINT})
        for index, state in enumerate(prefix_states(done)[1:]):
            checkpointer.after_step(f"s{index:02d}", state)
        checkpointer.release()


def test_resume(runner: CliRunner, tmp_path: Path) -> None:
    crashed(tmp_path, "wf", 7)
    result = invoke(runner, "resume", "wf", store=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith("step 8/10 s07: ")
    assert result.stdout == (
        "resumed from checkpoint 8\n"
        "steps run again: s07, s08, s09\n"
        "checkpoints written: 9, 10, 11\n"
        "workflow 'wf' completed\n"
    )
    again = invoke(runner, "resume", "wf", store=tmp_path)
    assert again.exit_code == 1
    assert error_lines(again) == [
        "error: workflow 'wf' is completed",
        "hint: `lmdbstate show WF` shows its final state; run it again under a new id",
    ]


def test_resume_json_past_a_damaged_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    crashed(tmp_path, "wf", 4)
    damage(tmp_path, b"ckpt", checkpoint_key("wf", 5), 30)
    result = invoke(runner, "resume", "wf", "--json", store=tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["resumed_from"], data["skipped_damaged"]) == (4, [5])
    assert data["steps_run"] == list(SIMPLE.step_names[3:])
    assert data["state"] == prefix_states(STEPS)[-1]
    human = invoke(runner, "resume", "wf", store=tmp_path)
    assert human.exit_code == 1  # completed now


def test_resume_text_names_damaged_checkpoints(runner: CliRunner, tmp_path: Path) -> None:
    crashed(tmp_path, "wf", 4)
    damage(tmp_path, b"ckpt", checkpoint_key("wf", 5), 30)
    result = invoke(runner, "resume", "wf", store=tmp_path)
    assert result.stdout.startswith("resumed from checkpoint 4, past damaged checkpoints 5\n")


def test_resume_of_a_changed_definition_needs_force(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed(tmp_path, "wf", 3)
    with CheckpointStore(tmp_path) as store:
        lease = store.acquire_lease("wf", extras={"definition": {"fingerprint": "0" * 16}})
        store.release_lease(lease)
    result = invoke(runner, "resume", "wf", store=tmp_path)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert lines[0].startswith(
        "error: workflow 'wf' changed definition: it started with other steps "
        "(fingerprint 0000000000000000); the definition now has s00, s01,"
    )
    assert "--force" in lines[1]
    forced = invoke(runner, "resume", "wf", "--force", store=tmp_path)
    assert forced.exit_code == 0, forced.output


def test_resume_errors_create_no_store(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "resume", "wf", store=tmp_path / "nowhere")
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: no store at {tmp_path / 'nowhere'}"
    assert not (tmp_path / "nowhere").exists()
    with CheckpointStore(tmp_path / "s") as store:
        store.put("plain", {})
    result = invoke(runner, "resume", "plain", store=tmp_path / "s")
    assert error_lines(result)[0] == "error: workflow 'plain' has no entrypoint recorded"


def test_config_show_and_check(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmdbstate.toml").write_text('map_size = "64MiB"\n')
    env = {"LMDBSTATE_DURABILITY": "async"}
    result = invoke(runner, "config", "show", "--json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["map_size"] == {"value": "64MiB", "source": str(tmp_path / "lmdbstate.toml")}
    assert data["durability"] == {"value": "async", "source": "env LMDBSTATE_DURABILITY"}
    assert data["path"] == {"value": str(tmp_path / ".lmdbstate"), "source": "default"}
    assert data["retention_keep_last"] == {"value": None, "source": "default"}
    option = json.loads(invoke(runner, "config", "show", "--json", store=Path("x")).stdout)
    assert option["path"] == {"value": str(tmp_path / "x"), "source": "argument"}
    table = invoke(runner, "config", "show", env=env)
    assert re.search(r"│ durability +│ async +│ env LMDBSTATE_DURABILITY +│", table.stdout)
    assert re.search(r"│ checkpoint_interval +│ - +│ default +│", table.stdout)
    check = invoke(runner, "config", "check")
    assert (
        check.stdout
        == f"ok: the configuration is valid (files read: {tmp_path / 'lmdbstate.toml'})\n"
    )
    assert json.loads(invoke(runner, "config", "check", "--json").stdout) == {
        "ok": True, "files": [str(tmp_path / "lmdbstate.toml")],
    }  # fmt: skip


def test_config_check_names_the_bad_value(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "hourly"\n')
    for command in ("check", "show"):
        result = invoke(runner, "config", command)
        assert result.exit_code == 1
        assert error_lines(result)[0] == (
            f"error: checkpoint_policy from {tmp_path / 'lmdbstate.toml'}: expected one of "
            "every_step, every_n_steps, on_gates, time_based, manual, got 'hourly'"
        )
    # A command that names its store does not read the broken file.
    assert invoke(runner, "list", store=tmp_path / "none").stderr.startswith("error: no store")
    assert invoke(runner, "list").stderr.startswith("error: checkpoint_policy from")
    assert invoke(runner, "config").exit_code == 2  # a group without its command


def test_demo(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "demo", "--id", "d1", "--seed", "7", "--json", store=tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["matches"] is True
    assert data["workflow_id"] == "d1"
    assert len(data["steps"]) == 12
    assert data["gates"] == ["review"]
    assert data["state_bytes"] > 200 * 1024
    assert data["lease_taken_over"] is True
    # Killed after checkpoint 2 or 3 (after steps 3 and 6), before the end.
    assert data["acknowledged"][-1] in (2, 3)
    assert 3 <= len(data["done_before_kill"]) < 12
    assert data["resumed_from"] >= data["acknowledged"][-1]
    done = data["done_before_kill"]
    assert data["run_again"] == done[len(done) - len(data["run_again"]) :]
    assert [c["trigger"] for c in data["checkpoints"]][0] == "start"
    assert data["checkpoints"][-1]["trigger"] == "final"
    assert data["seconds"] < 10
    assert stored(tmp_path, lambda s: s.workflow("d1").status) == "completed"


def test_demo_text(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "demo", "--seed", "1", store=tmp_path)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    for phrase in (
        "steps 12: fetch, clean, tokenize, count, stopwords, weigh, review, cluster",
        "gates review",
        "policy every_n_steps (3), and the first and the final checkpoint",
        "run lmdbstate --store",
        "kill SIGKILL",
        "lease still held by the killed run: taken over, as its process ended",
        "resume from checkpoint",
        "run again ",
        "result: completed; the final state equals the uninterrupted run's",
    ):
        assert phrase in flat
    (workflow,) = stored(tmp_path, lambda s: list(s.workflows()))
    assert workflow.workflow_id.startswith("demo-")
    again = invoke(runner, "demo", "--id", workflow.workflow_id, store=tmp_path)
    assert again.exit_code == 1
    assert error_lines(again)[0] == f"error: workflow {workflow.workflow_id!r} already exists"


def test_step_lines_without_a_start_time() -> None:
    record = StepRecord("fetch", 0, 1, 12, None, 5, None, None)
    assert render.step_line(record) == "step 1/12 fetch"


def test_the_console_script_prints_library_warnings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("lmdbstate")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr("sys.argv", ["lmdbstate", "--version"])
    with pytest.raises(SystemExit):
        main()
    (handler,) = logger.handlers
    logger.warning("checkpoints %s are damaged", "6")
    assert capsys.readouterr().err == "warning: checkpoints 6 are damaged\n"


def test_a_writable_open_takes_the_configured_store_settings(
    runner: CliRunner, filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): the CLI used to take only the path from the configuration."""
    cli_app = importlib.import_module("lmdbstate.cli.app")  # the module, not the Typer app
    (tmp_path / "lmdbstate.toml").write_text(
        'durability = "async"\nmap_size = "1MiB"\nmax_map_size = "64MiB"\nretention_keep_last = 3\n'
    )
    monkeypatch.chdir(tmp_path)
    opened: list[dict[str, Any]] = []
    real = cli_app.CheckpointStore

    def recording(path: Any, **options: Any) -> Any:
        opened.append(options)
        return real(path, **options)

    monkeypatch.setattr(cli_app, "CheckpointStore", recording)
    assert invoke(runner, "delete", "wf-b", "--yes", store=filled.path).exit_code == 0
    assert opened[-1] == {
        "readonly": False, "durability": "async", "map_size": 1 << 20, "max_map_size": 64 << 20,
        "retention": RetentionPolicy(keep_last=3),
    }  # fmt: skip
    assert opened[0] == {"readonly": True}  # the check before it: read-only, no settings
    # An import leaves the configured retention out: its own checkpoints must not be collected
    # while it writes them (review finding).
    exported = tmp_path / "all.jsonl"
    with CheckpointStore(filled.path, readonly=True) as source:
        export_jsonl(source, exported)
    assert invoke(runner, "import", str(exported), store=tmp_path / "copy").exit_code == 0
    assert opened[-1]["retention"] is None


# -- diff -------------------------------------------------------------------------------------


@pytest.fixture
def evolving(tmp_path: Path) -> Path:
    """A workflow of three checkpoints whose state grows and changes."""
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        store.put("etl", {"cursor": 100, "done": ["extract"], "tmp": {"x": 1}}, step="extract")
        store.put("etl", {"cursor": 200, "done": ["extract", "transform"]}, step="transform")
        store.put("etl", {"cursor": 300, "done": ["extract", "transform", "load"]}, step="load")
        store.put("single", {"n": 1})
    return path


def test_diff_compares_the_newest_two_by_default(runner: CliRunner, evolving: Path) -> None:
    result = invoke(runner, "diff", "etl", store=evolving)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "workflow etl: seq 2 (step transform) -> seq 3 (step load)",
        "~ cursor: 200 -> 300",
        "+ done[2]: 'load'",
        "2 changes",
    ]


def test_diff_of_given_seqs_in_json(runner: CliRunner, evolving: Path) -> None:
    result = invoke(runner, "diff", "etl", "1", "3", "--json", store=evolving)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "workflow_id": "etl",
        "from": {"seq": 1, "step": "extract"},
        "to": {"seq": 3, "step": "load"},
        "changes": [
            {"op": "changed", "path": ["cursor"], "old": 100, "new": 300},
            {"op": "added", "path": ["done", 1], "old": None, "new": "transform"},
            {"op": "added", "path": ["done", 2], "old": None, "new": "load"},
            {"op": "removed", "path": ["tmp"], "old": {"x": 1}, "new": None},
        ],
    }
    against_newest = invoke(runner, "diff", "etl", "2", "--json", store=evolving)
    assert json.loads(against_newest.stdout)["to"]["seq"] == 3
    same = invoke(runner, "diff", "etl", "3", "3", store=evolving)
    assert same.stdout.splitlines()[-1] == "no change"


def test_diff_refuses_what_it_cannot_compare(runner: CliRunner, evolving: Path) -> None:
    one = invoke(runner, "diff", "single", store=evolving)
    assert one.exit_code == 1
    assert error_lines(one)[0] == "error: workflow 'single' has fewer than two checkpoints"
    missing = invoke(runner, "diff", "etl", "1", "9", store=evolving)
    assert missing.exit_code == 1
    assert invoke(runner, "diff", "nope", store=evolving).exit_code == 1
    for bad in (["1", "2", "3"], ["0"]):
        assert invoke(runner, "diff", "etl", *bad, store=evolving).exit_code == 2
    damage(evolving, b"ckpt", checkpoint_key("etl", 3), -1)
    damaged = invoke(runner, "diff", "etl", store=evolving)
    assert damaged.exit_code == 3
