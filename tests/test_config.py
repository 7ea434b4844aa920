"""Config: sources and their precedence, validation naming key and source, units, reload."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import ConfigError
from lmdbstate.config import (
    CHECKPOINT_POLICIES,
    ENV_VARIABLES,
    TAPPS_VARIABLES,
    Config,
    ConfigWatcher,
    format_duration,
    format_size,
    load_config,
    parse_duration,
    parse_size,
)
from lmdbstate.env import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, MIN_MAP_SIZE
from lmdbstate.memory import MEMORY_PATH

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
SETTINGS = [item.name for item in dataclasses.fields(Config) if item.name != "sources"]


def write_toml(path: Path, settings: dict[str, Any], section: str | None = None) -> Path:
    """Write settings as TOML (JSON spells str, int, float and bool the way TOML does)."""
    lines = [] if section is None else [f"[{section}]"]
    lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(cwd: Path, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    return load_config(cwd=cwd, environ={} if environ is None else environ, **overrides)


def error_of(cwd: Path, environ: dict[str, str] | None = None, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(cwd, environ, **overrides)
    assert caught.value.hint
    return str(caught.value)


# -- sources and precedence -------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config == Config(path=str(tmp_path / ".lmdbstate"))
    assert (config.enabled, config.durability, config.checkpoint_policy) == (
        True,
        "sync",
        "every_step",
    )
    assert (config.map_size, config.max_map_size) == (DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE)
    assert config.checkpoint_interval is config.retention_keep_last is None
    assert dict(config.sources) == dict.fromkeys(SETTINGS, "default")


def test_every_source_in_its_place(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path / "lmdbstate.toml",
        {
            "path": "state",
            "durability": "async",
            "map_size": "64MiB",
            "checkpoint_policy": "on_gates",
            "retention_max_age": "30d",
        },
    )
    environ = {
        "TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "time_based",
        "TAPPS_AGENTS_CHECKPOINT_INTERVAL": "90",
        "LMDBSTATE_DURABILITY": "sync",
        "LMDBSTATE_RETENTION_MAX_SIZE": "500MB",
        "LMDBSTATE_RETENTION_KEEP_LAST": "9",
        "UNRELATED": "x",
    }
    config = load(tmp_path, environ, retention_max_size="1GiB", retention_keep_last=5)
    assert config == Config(
        path=str(tmp_path / "state"),
        durability="sync",
        map_size=64 << 20,
        checkpoint_policy="time_based",
        checkpoint_interval=90,
        retention_keep_last=5,
        retention_max_age=30 * 86400,
        retention_max_size=1 << 30,
    )
    assert dict(config.sources) == {
        **dict.fromkeys(SETTINGS, "default"),
        "path": str(toml),
        "durability": "env LMDBSTATE_DURABILITY",
        "map_size": str(toml),
        "checkpoint_policy": "env TAPPS_AGENTS_CHECKPOINT_FREQUENCY",
        "checkpoint_interval": "env TAPPS_AGENTS_CHECKPOINT_INTERVAL",
        "retention_max_age": str(toml),
        "retention_max_size": "argument",
        "retention_keep_last": "argument",
    }


LAYERS = ("file", "tapps", "env", "argument")


@pytest.mark.parametrize(
    "present", [subset for n in range(5) for subset in itertools.combinations(LAYERS, n)]
)
def test_the_highest_source_present_wins(tmp_path: Path, present: tuple[str, ...]) -> None:
    # Each layer sets a different policy, so the value shows which one won.
    policy = {"file": "on_gates", "tapps": "manual", "env": "every_step", "argument": "on_gates"}
    environ: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    if "file" in present:
        write_toml(tmp_path / "lmdbstate.toml", {"checkpoint_policy": policy["file"]})
    if "tapps" in present:
        environ["TAPPS_AGENTS_CHECKPOINT_FREQUENCY"] = policy["tapps"]
    if "env" in present:
        environ["LMDBSTATE_CHECKPOINT_POLICY"] = policy["env"]
    if "argument" in present:
        overrides["checkpoint_policy"] = policy["argument"]
    config = load(tmp_path, environ, **overrides)
    winner = present[-1] if present else None
    expected_source = {
        None: "default",
        "file": str(tmp_path / "lmdbstate.toml"),
        "tapps": "env TAPPS_AGENTS_CHECKPOINT_FREQUENCY",
        "env": "env LMDBSTATE_CHECKPOINT_POLICY",
        "argument": "argument",
    }[winner]
    assert config.sources["checkpoint_policy"] == expected_source
    assert config.checkpoint_policy == ("every_step" if winner is None else policy[winner])


def test_pyproject_section_is_read_when_there_is_no_lmdbstate_toml(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[tool.lmdbstate]\nenabled = false\n')
    config = load(tmp_path)
    assert config.enabled is False
    assert config.sources["enabled"] == f"{pyproject} [tool.lmdbstate]"


def test_pyproject_without_a_section_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.other]\na = 1\n')
    assert dict(load(tmp_path).sources) == dict.fromkeys(SETTINGS, "default")


def test_lmdbstate_toml_wins_and_pyproject_is_then_not_read(tmp_path: Path) -> None:
    write_toml(tmp_path / "lmdbstate.toml", {"durability": "async"})
    # Not merged, and not even parsed: a broken pyproject.toml does not matter.
    (tmp_path / "pyproject.toml").write_text("[tool.lmdbstate]\nenabled = false\n[[[broken\n")
    config = load(tmp_path)
    assert (config.durability, config.enabled) == ("async", True)
    assert config.sources["enabled"] == "default"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("state", "{cwd}/state"),
        ("../elsewhere/state", "{cwd}/../elsewhere/state"),
        ("/abs/state", "/abs/state"),
        (MEMORY_PATH, MEMORY_PATH),
    ],
)
def test_a_relative_path_is_resolved_against_cwd(tmp_path: Path, given: str, expected: str) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    want = expected.format(cwd=cwd)
    assert load(cwd, {"LMDBSTATE_PATH": given}).path == want
    write_toml(cwd / "lmdbstate.toml", {"path": given})
    assert load(cwd).path == want
    assert load(cwd, path=Path(given)).path == want


def test_cwd_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(tmp_path / "lmdbstate.toml", {"durability": "async"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMDBSTATE_CHECKPOINT_POLICY", "manual")
    config = load_config()
    assert (config.path, config.durability, config.checkpoint_policy) == (
        str(tmp_path / ".lmdbstate"),
        "async",
        "manual",
    )


def test_the_cli_debug_variable_is_not_a_setting(tmp_path: Path) -> None:
    assert load(tmp_path, {"LMDBSTATE_DEBUG": "1"}) == load(tmp_path)


# -- the variables of the system lmdbstate replaces -------------------------------------------


@pytest.mark.parametrize(
    ("text", "enabled"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True)]
    + [("false", False), ("False", False), ("0", False), ("no", False)],
)
def test_tapps_enabled(tmp_path: Path, text: str, enabled: bool) -> None:
    config = load(tmp_path, {"TAPPS_AGENTS_CHECKPOINT_ENABLED": text})
    assert config.enabled is enabled
    assert config.sources["enabled"] == "env TAPPS_AGENTS_CHECKPOINT_ENABLED"


@pytest.mark.parametrize("policy", CHECKPOINT_POLICIES)
def test_tapps_frequency_and_interval(tmp_path: Path, policy: str) -> None:
    environ = {
        "TAPPS_AGENTS_CHECKPOINT_FREQUENCY": policy,
        "TAPPS_AGENTS_CHECKPOINT_INTERVAL": "3",
    }
    config = load(tmp_path, environ)
    # An interval is kept whatever the policy; policies without one ignore it.
    assert (config.checkpoint_policy, config.checkpoint_interval) == (policy, 3)


def test_tapps_interval_in_seconds_may_be_fractional(tmp_path: Path) -> None:
    environ = {
        "TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "time_based",
        "TAPPS_AGENTS_CHECKPOINT_INTERVAL": "2.5",
    }
    assert load(tmp_path, environ).checkpoint_interval == 2.5


def test_lmdbstate_variables_beat_tapps_ones(tmp_path: Path) -> None:
    environ = {
        "TAPPS_AGENTS_CHECKPOINT_ENABLED": "false",
        "TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "manual",
        "TAPPS_AGENTS_CHECKPOINT_INTERVAL": "7",
        "LMDBSTATE_ENABLED": "yes",
        "LMDBSTATE_CHECKPOINT_POLICY": "every_n_steps",
    }
    config = load(tmp_path, environ)
    assert (config.enabled, config.checkpoint_policy, config.checkpoint_interval) == (
        True,
        "every_n_steps",
        7,
    )
    assert config.sources["checkpoint_interval"] == "env TAPPS_AGENTS_CHECKPOINT_INTERVAL"


# -- validation: every error names the setting and its source ---------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('map_sise = "1GiB"', "unknown setting 'map_sise' in {file}"),
        ("[retention]\nkeep_last = 3", "unknown setting 'retention' in {file}"),
        ('enabled = "yes"', "enabled from {file}: expected true or false, got 'yes'"),
        ('path = ""', "path from {file}: expected a non-empty path"),
        ("path = 7", "path from {file}: expected a non-empty path"),
        ('durability = "fast"', "durability from {file}: expected one of sync, group, async"),
        ('map_size = "64XB"', "map_size from {file}: unknown unit 'XB' in '64XB'"),
        ("map_size = 1.5", "map_size from {file}: expected an int of at least 65536"),
        ("map_size = true", "map_size from {file}: expected an int"),
        ('map_size = "1KiB"', "map_size from {file}: expected an int of at least 65536"),
        ('max_map_size = "1MiB"', "max_map_size from {file}: 1048576 is smaller than map_size"),
        ('checkpoint_policy = "hourly"', "checkpoint_policy from {file}: expected one of"),
        (
            'checkpoint_policy = "every_n_steps"',
            "checkpoint_interval from default: the every_n_steps policy (from {file}) needs",
        ),
        (
            'checkpoint_policy = "every_n_steps"\ncheckpoint_interval = 2.0',
            "checkpoint_interval from {file}: the every_n_steps policy (from {file}) needs a "
            "whole number of steps, got 2.0",
        ),
        (
            'checkpoint_policy = "time_based"',
            "checkpoint_interval from default: the time_based policy (from {file}) needs a number",
        ),
        ("checkpoint_interval = 0", "checkpoint_interval from {file}: expected a positive"),
        ("checkpoint_interval = -2.5", "checkpoint_interval from {file}: expected a positive"),
        ("checkpoint_interval = inf", "checkpoint_interval from {file}: expected a positive"),
        ("checkpoint_interval = nan", "checkpoint_interval from {file}: expected a positive"),
        ('checkpoint_interval = "5"', "checkpoint_interval from {file}: expected a positive"),
        ("retention_keep_last = 0", "retention_keep_last from {file}: expected an int of at"),
        ('retention_max_age = "30 days"', "retention_max_age from {file}: unknown unit 'days'"),
        ("retention_max_age = 1.5", "retention_max_age from {file}: expected an int of at"),
        ('retention_max_size = "0MB"', "retention_max_size from {file}: expected an int of"),
        ('retention_finished_max_age = "1w"', "retention_finished_max_age from {file}: unknown"),
    ],
)
def test_bad_file_values_name_key_and_file(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "lmdbstate.toml"
    path.write_text(toml + "\n")
    assert expected.format(file=path) in error_of(tmp_path)


def test_bad_pyproject_values_name_the_section(tmp_path: Path) -> None:
    pyproject = write_toml(tmp_path / "pyproject.toml", {"durability": 1}, "tool.lmdbstate")
    assert f"durability from {pyproject} [tool.lmdbstate]: expected one of" in error_of(tmp_path)
    pyproject.write_text("[tool]\nlmdbstate = 5\n")
    assert f"{pyproject} [tool.lmdbstate] must be a table" in error_of(tmp_path)


@pytest.mark.parametrize("name", ["lmdbstate.toml", "pyproject.toml"])
def test_an_unreadable_file_is_named(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("enabled = \n")
    assert f"cannot read {tmp_path / name}" in error_of(tmp_path)
    (tmp_path / name).write_bytes(b"path = '\xff'\n")
    assert f"cannot read {tmp_path / name}" in error_of(tmp_path)
    (tmp_path / name).unlink()
    (tmp_path / name).mkdir()
    assert f"cannot read {tmp_path / name}" in error_of(tmp_path)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LMDBSTATE_MAP_SISE": "1GiB"}, "unknown setting 'map_sise' in env LMDBSTATE_MAP_SISE"),
        ({"LMDBSTATE_PATH": ""}, "path from env LMDBSTATE_PATH: expected a non-empty path"),
        ({"LMDBSTATE_ENABLED": "maybe"}, "enabled from env LMDBSTATE_ENABLED: 'maybe' is not"),
        ({"LMDBSTATE_RETENTION_KEEP_LAST": "-1"}, "retention_keep_last from env LMDBSTATE_RE"),
        ({"LMDBSTATE_MAP_SIZE": "64M"}, "map_size from env LMDBSTATE_MAP_SIZE: unknown unit 'M'"),
        ({"LMDBSTATE_MAP_SIZE": "-1"}, "map_size from env LMDBSTATE_MAP_SIZE: '-1' is not a"),
        (
            {"LMDBSTATE_DURABILITY": "batched"},
            "durability from env LMDBSTATE_DURABILITY: expected one of sync, group, async, got "
            "'batched'",
        ),
        (
            {"LMDBSTATE_CHECKPOINT_INTERVAL": "1e3"},
            "checkpoint_interval from env LMDBSTATE_CHECKPOINT_INTERVAL: '1e3' is not a positive",
        ),
        (
            {"LMDBSTATE_RETENTION_KEEP_LAST": "3.0"},
            "retention_keep_last from env LMDBSTATE_RETENTION_KEEP_LAST: '3.0' is not a whole",
        ),
        (
            {"TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "hourly"},
            "checkpoint_policy from env TAPPS_AGENTS_CHECKPOINT_FREQUENCY: expected one of "
            "every_step, every_n_steps, on_gates, time_based, manual, got 'hourly'",
        ),
        (
            {"TAPPS_AGENTS_CHECKPOINT_ENABLED": "on"},
            "enabled from env TAPPS_AGENTS_CHECKPOINT_ENABLED: 'on' is not one of",
        ),
        (
            {"TAPPS_AGENTS_CHECKPOINT_INTERVAL": "often"},
            "checkpoint_interval from env TAPPS_AGENTS_CHECKPOINT_INTERVAL: 'often' is not a",
        ),
        (
            {"TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "every_n_steps"},
            "checkpoint_interval from default: the every_n_steps policy "
            "(from env TAPPS_AGENTS_CHECKPOINT_FREQUENCY) needs a whole number of steps",
        ),
    ],
)
def test_bad_variables_name_key_and_variable(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    assert expected in error_of(tmp_path, environ)


def test_bad_arguments_name_key_and_argument(tmp_path: Path) -> None:
    assert "unknown setting 'map_sise' in the arguments" in error_of(tmp_path, map_sise=1)
    assert "enabled from argument: expected true or false" in error_of(tmp_path, enabled="no")
    assert "map_size from argument: unknown unit" in error_of(tmp_path, map_size="1 GigaB")
    assert "max_map_size from argument: 65536 is smaller than map_size 1073741824 (from " in (
        error_of(tmp_path, max_map_size=MIN_MAP_SIZE)
    )


def test_direct_construction_checks_and_infers_sources() -> None:
    config = Config(path="x", enabled=False)
    assert config.sources["path"] == config.sources["enabled"] == "argument"
    assert config.sources["durability"] == "default"
    with pytest.raises(ConfigError, match="durability from argument: expected one of"):
        Config(durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="map_size from argument: expected an int"):
        Config(map_size="64MiB")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="checkpoint_interval from default: the time_based"):
        Config(checkpoint_policy="time_based")


def test_equality_ignores_sources(tmp_path: Path) -> None:
    from_env = load(tmp_path, {"LMDBSTATE_DURABILITY": "async"})
    from_argument = load(tmp_path, durability="async")
    assert from_env == from_argument
    assert hash(from_env) == hash(from_argument)
    assert from_env.sources != from_argument.sources


# -- units ------------------------------------------------------------------------------------

SIZE_FACTORS = {
    "B": 1,
    "kB": 1000,
    "KiB": 1024,
    "MB": 10**6,
    "MiB": 1 << 20,
    "GB": 10**9,
    "GiB": 1 << 30,
    "TB": 10**12,
    "TiB": 1 << 40,
    "PB": 10**15,
    "PiB": 1 << 50,
}
DURATION_FACTORS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.integers(min_value=0, max_value=1 << 70))
def test_format_then_parse_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.integers(min_value=0, max_value=10**12))
def test_format_then_parse_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(sorted(SIZE_FACTORS)),
    st.sampled_from([str.lower, str.upper, str]),
    st.sampled_from(["", " "]),
)
def test_a_size_is_its_number_times_its_unit(number: int, unit: str, case: Any, space: str) -> None:
    assert parse_size(f"{number}{space}{case(unit)}") == number * SIZE_FACTORS[unit]


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(DURATION_FACTORS)))
def test_a_duration_is_its_number_times_its_unit(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == number * DURATION_FACTORS[unit]


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 << 20), ("1GiB", 1 << 30), ("500MB", 500 * 10**6), ("4096", 4096)]
    + [("1.5GiB", 3 << 29), ("0.5KiB", 512), ("2.25kB", 2250), ("7 b", 7), (" 1TiB ", 1 << 40)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a number"),
        ("GiB", "not a number"),
        ("1.", "not a number"),
        (".5GiB", "not a number"),
        ("-1", "not a number"),
        ("1e9", "not a number"),
        ("1_000", "not a number"),
        ("1,5GiB", "not a number"),
        ("1  GiB", "not a number"),
        ("\u0661\u0662MiB", "not a number"),
        ("64M", "unknown unit 'M'"),
        ("1GiBs", "unknown unit 'GiBs'"),
        ("0.5B", "not a whole number of bytes"),
        ("1.0001kB", "not a whole number of bytes"),
    ],
)
def test_sizes_are_parsed_strictly(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("45s", 45), ("60", 60), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [("30D", "unknown unit 'D'"), ("1w", "unknown unit 'w'"), ("1h30m", "not a number")]
    + [("0.5s", "not a whole number of seconds"), ("-5m", "not a number"), ("", "not a number")],
)
def test_durations_are_parsed_strictly(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (7, "7B"), (1024, "1KiB"), (1536, "1536B"), (500 * 10**6, "500MB")]
    + [(1 << 30, "1GiB"), (10**12, "1TB"), (3 << 40, "3TiB")],
)
def test_sizes_are_formatted_in_the_largest_exact_unit(size: int, text: str) -> None:
    assert format_size(size) == text


def test_formatting_refuses_negative_amounts() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_size(-1)
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)


CONFIGS = st.builds(
    Config,
    path=st.from_regex(r"/[a-z0-9_.-]{1,20}", fullmatch=True),
    enabled=st.booleans(),
    durability=st.sampled_from(["sync", "group", "async"]),
    map_size=st.integers(min_value=MIN_MAP_SIZE, max_value=1 << 40),
    max_map_size=st.just(1 << 41),
    checkpoint_policy=st.sampled_from(["every_step", "every_n_steps", "on_gates", "manual"]),
    checkpoint_interval=st.integers(min_value=1, max_value=1000),
    retention_keep_last=st.none() | st.integers(min_value=1, max_value=10**6),
    retention_max_age=st.none() | st.integers(min_value=1, max_value=10**9),
    retention_max_size=st.none() | st.integers(min_value=1, max_value=1 << 50),
    retention_finished_max_age=st.none() | st.integers(min_value=1, max_value=10**9),
)


@given(CONFIGS)
def test_settings_written_to_a_file_load_back_to_the_same_config(config: Config) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = {key: value for key, value in config.settings().items() if value is not None}
        toml = write_toml(Path(directory, "lmdbstate.toml"), written)
        loaded = load_config(cwd=directory, environ={})
        assert loaded == config
        assert {loaded.sources[key] for key in written} == {str(toml)}


def test_settings_show_sizes_and_ages_in_units() -> None:
    config = Config(map_size=64 << 20, retention_max_age=86400 * 30, retention_max_size=10**9)
    assert config.settings() == {
        "path": ".lmdbstate",
        "enabled": True,
        "durability": "sync",
        "map_size": "64MiB",
        "max_map_size": "1TiB",
        "checkpoint_policy": "every_step",
        "checkpoint_interval": None,
        "dedup": True,
        "compression": "none",
        "chunk_cache": "32MiB",
        "retention_keep_last": None,
        "retention_max_age": "30d",
        "retention_max_size": "1GB",
        "retention_finished_max_age": None,
    }


# -- opening the store ------------------------------------------------------------------------


def test_the_chunk_settings_reach_the_store(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {"LMDBSTATE_DEDUP": "false", "LMDBSTATE_CHUNK_CACHE": "1MiB"},
        compression="zstd",
    )
    assert (config.dedup, config.chunk_cache, config.compression) == (False, 1 << 20, "zstd")
    assert config.sources["dedup"] == "env LMDBSTATE_DEDUP"
    state = {"messages": [f"message {n} " * 40 for n in range(20)]}
    with config.open_store() as store:
        assert store.get("wf", store.put("wf", state).seq).record_format == 1
    with load(tmp_path, {}).open_store() as store:
        assert store.get("wf", store.put("wf", state).seq).record_format == 2
    with pytest.raises(ConfigError, match="compression"):
        Config(compression="lz4")
    with pytest.raises(ConfigError, match="chunk_cache"):
        Config(chunk_cache=-1)


def test_open_store_uses_the_configured_path(tmp_path: Path) -> None:
    config = load(tmp_path, {"LMDBSTATE_DURABILITY": "async"}, map_size="1MiB")
    with config.open_store() as store:
        store.put("wf", 1)
        assert (store.path, store.durability, store.stats().map_size) == (
            str(tmp_path / ".lmdbstate"),
            "async",
            1 << 20,
        )
    with config.open_store(readonly=True) as store:
        assert store.readonly
        assert store.workflow("wf").head_seq == 1


def test_disabled_persistence_keeps_checkpoints_in_memory(tmp_path: Path) -> None:
    config = load(tmp_path, {"TAPPS_AGENTS_CHECKPOINT_ENABLED": "false"})
    with config.open_store() as store:
        assert store.path == MEMORY_PATH
        store.put("wf", {"step": 1})
        latest = store.latest("wf")
        assert latest is not None
        assert latest.state == {"step": 1}
    with config.open_store() as again:
        assert list(again.workflows()) == []
    assert os.listdir(tmp_path) == []


# -- reload -----------------------------------------------------------------------------------


def edit(path: Path, settings: dict[str, Any], tick: int) -> None:
    """Rewrite the file with an mtime of its own, as an edit seconds later would have."""
    write_toml(path, settings)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))


def test_reload_picks_up_an_edit(tmp_path: Path) -> None:
    toml = tmp_path / "lmdbstate.toml"
    edit(toml, {"checkpoint_policy": "every_step"}, 1)
    watcher = ConfigWatcher(cwd=tmp_path, environ={})
    first = watcher.config
    assert watcher.poll() is first  # nothing changed: nothing read
    edit(toml, {"checkpoint_policy": "every_n_steps", "checkpoint_interval": 5}, 2)
    reloaded = watcher.poll()
    assert (reloaded.checkpoint_policy, reloaded.checkpoint_interval) == ("every_n_steps", 5)
    assert watcher.config is reloaded
    assert watcher.poll() is reloaded


def test_reload_after_a_touch_gives_an_equal_config(tmp_path: Path) -> None:
    toml = tmp_path / "lmdbstate.toml"
    edit(toml, {"retention_keep_last": 3}, 1)
    watcher = ConfigWatcher(cwd=tmp_path, environ={"LMDBSTATE_RETENTION_MAX_AGE": "12h"})
    before = watcher.config
    os.utime(toml, ns=(2 * 10**9, 2 * 10**9))
    assert watcher.poll() == before
    assert (before.retention_keep_last, before.retention_max_age) == (3, 43200)


def test_reload_sees_a_file_appear_and_disappear(tmp_path: Path) -> None:
    watcher = ConfigWatcher(cwd=tmp_path, environ={})
    assert watcher.config.durability == "sync"
    write_toml(tmp_path / "pyproject.toml", {"durability": "async"}, "tool.lmdbstate")
    assert watcher.poll().durability == "async"
    edit(tmp_path / "lmdbstate.toml", {"enabled": False}, 3)
    assert (watcher.poll().durability, watcher.config.enabled) == ("sync", False)
    (tmp_path / "lmdbstate.toml").unlink()
    assert (watcher.poll().durability, watcher.config.enabled) == ("async", True)


def test_reload_keeps_environment_and_arguments_in_force(tmp_path: Path) -> None:
    toml = tmp_path / "lmdbstate.toml"
    edit(toml, {"durability": "async"}, 1)
    watcher = ConfigWatcher(
        cwd=tmp_path, environ={"LMDBSTATE_ENABLED": "false"}, checkpoint_policy="manual"
    )
    edit(toml, {"durability": "sync", "enabled": True, "checkpoint_policy": "on_gates"}, 2)
    config = watcher.poll()
    assert (config.durability, config.enabled, config.checkpoint_policy) == (
        "sync",
        False,
        "manual",
    )


def test_a_bad_edit_keeps_the_old_config_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    toml = tmp_path / "lmdbstate.toml"
    edit(toml, {"checkpoint_policy": "on_gates"}, 1)
    watcher = ConfigWatcher(cwd=tmp_path, environ={})
    good = watcher.config
    edit(toml, {"checkpoint_policy": "hourly"}, 2)
    with caplog.at_level(logging.WARNING, logger="lmdbstate"):
        assert watcher.poll() is good
        assert watcher.poll() is good  # logged once per edit, not at every checkpoint
    [record] = caplog.records
    assert record.name == "lmdbstate"
    assert record.levelno == logging.WARNING
    assert f"checkpoint_policy from {toml}: expected one of" in record.getMessage()
    edit(toml, {"checkpoint_policy": "manual"}, 3)
    assert watcher.poll().checkpoint_policy == "manual"


def test_a_bad_config_at_the_start_raises(tmp_path: Path) -> None:
    write_toml(tmp_path / "lmdbstate.toml", {"durability": "fast"})
    with pytest.raises(ConfigError, match="durability from"):
        ConfigWatcher(cwd=tmp_path, environ={})


# -- the documentation ------------------------------------------------------------------------


def test_the_docs_describe_every_setting_and_variable() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert set(ENV_VARIABLES.values()) == set(SETTINGS)
    for name in [*SETTINGS, *ENV_VARIABLES, *TAPPS_VARIABLES, *CHECKPOINT_POLICIES]:
        assert f"`{name}`" in text, name
