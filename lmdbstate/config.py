"""Config: where the store lives, how it writes, when executors checkpoint, what retention keeps.

Sources, lowest first: the defaults; ``lmdbstate.toml`` (top-level keys) or, when there is no
such file, the ``[tool.lmdbstate]`` table of ``pyproject.toml`` in the working directory; the
``TAPPS_AGENTS_CHECKPOINT_*`` variables of the system lmdbstate replaces; ``LMDBSTATE_*``
variables; explicit arguments. A value that does not validate is an error naming the setting
and its source, never replaced by a default. ``docs/configuration.md`` lists every setting.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

from .env import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, DURABILITIES, MIN_MAP_SIZE
from .errors import ConfigError
from .locations import is_url
from .memory import MEMORY_PATH
from .models import Durability
from .retention import RetentionPolicy
from .store import DEFAULT_CHUNK_CACHE, DEFAULT_PATH, CheckpointStore

COMPRESSIONS = ("none", "zstd")

log = logging.getLogger("lmdbstate")

CheckpointPolicy = Literal["every_step", "every_n_steps", "on_gates", "time_based", "manual"]
CHECKPOINT_POLICIES: tuple[CheckpointPolicy, ...] = get_args(CheckpointPolicy)

CONFIG_FILE = "lmdbstate.toml"
PYPROJECT_FILE = "pyproject.toml"
ENV_PREFIX = "LMDBSTATE_"
TAPPS_VARIABLES = {
    "TAPPS_AGENTS_CHECKPOINT_ENABLED": "enabled",
    "TAPPS_AGENTS_CHECKPOINT_FREQUENCY": "checkpoint_policy",
    "TAPPS_AGENTS_CHECKPOINT_INTERVAL": "checkpoint_interval",
}
"""The variables of the system lmdbstate replaces, and the settings they stand for."""
_OTHER_VARIABLES = frozenset({"LMDBSTATE_DEBUG"})  # read by the CLI; not settings
_HINT = "see docs/configuration.md for every setting, its type and where it may be set"

# -- units ------------------------------------------------------------------------------------

_SIZE_UNITS = {
    "B": 1,
    "kB": 1000,
    "KiB": 1 << 10,
    "MB": 1000**2,
    "MiB": 1 << 20,
    "GB": 1000**3,
    "GiB": 1 << 30,
    "TB": 1000**4,
    "TiB": 1 << 40,
    "PB": 1000**5,
    "PiB": 1 << 50,
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_QUANTITY = re.compile(r"([0-9]+)(?:\.([0-9]+))? ?([A-Za-z]*)")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _parse_quantity(text: str, units: Mapping[str, int], noun: str, fold_case: bool) -> int:
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a number followed by an optional unit")
    whole, fraction, unit = match.groups()
    if unit:
        lookup = {name.lower(): factor for name, factor in units.items()} if fold_case else units
        factor = lookup.get(unit.lower() if fold_case else unit)
        if factor is None:
            raise ValueError(f"unknown unit {unit!r} in {text!r}: use one of {', '.join(units)}")
    else:
        factor = 1
    # Integer arithmetic: "1.5GiB" is exact, and "0.5B" is refused rather than rounded.
    scale: int = 10 ** len(fraction or "")
    amount, remainder = divmod((int(whole) * scale + int(fraction or "0")) * factor, scale)
    if remainder:
        raise ValueError(f"{text!r} is not a whole number of {noun}")
    return amount


def parse_size(text: str) -> int:
    """The number of bytes in a size such as ``"64MiB"``, ``"1.5GiB"``, ``"500MB"`` or ``"4096"``.

    Units, in any letter case: B; kB, MB, GB, TB, PB (powers of 1000); KiB, MiB, GiB, TiB, PiB
    (powers of 1024). No unit means bytes. The result must be a whole number of bytes.

    Raises:
        ValueError: not a number with an optional unit, an unknown unit, or a fraction of a byte.
    """
    return _parse_quantity(text, _SIZE_UNITS, "bytes", fold_case=True)


def parse_duration(text: str) -> int:
    """The number of seconds in a duration such as ``"30d"``, ``"12h"``, ``"15m"`` or ``"45s"``.

    Units (lower case): s, m (minutes), h, d. No unit means seconds. Fractions are accepted when
    the result is a whole number of seconds (``"1.5h"``).

    Raises:
        ValueError: not a number with an optional unit, an unknown unit, or a fraction of a
            second.
    """
    return _parse_quantity(text, _DURATION_UNITS, "seconds", fold_case=False)


def _format_quantity(amount: int, units: Mapping[str, int]) -> str:
    if amount < 0:
        raise ValueError(f"cannot format a negative amount ({amount})")
    if amount == 0:
        return f"0{next(iter(units))}"  # every unit holds 0 exactly: name the smallest
    factor, unit = max((factor, unit) for unit, factor in units.items() if amount % factor == 0)
    return f"{amount // factor}{unit}"


def format_size(size: int) -> str:
    """``size`` bytes in the largest unit that holds it exactly: ``"1GiB"``, ``"500MB"``, ``"7B"``.

    ``parse_size`` reads it back to ``size``.

    Raises:
        ValueError: a negative size.
    """
    return _format_quantity(size, _SIZE_UNITS)


def format_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that holds it exactly: ``"30d"``, ``"90m"``, ``"45s"``.

    ``parse_duration`` reads it back to ``seconds``.

    Raises:
        ValueError: a negative duration.
    """
    return _format_quantity(seconds, _DURATION_UNITS)


# -- settings ---------------------------------------------------------------------------------


def _same(value: Any) -> Any:
    return value


def _bool_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not one of true/false, 1/0, yes/no")


def _int_text(text: str) -> int:
    if re.fullmatch(r"[0-9]+", text.strip()) is None:
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _number_text(text: str) -> int | float:
    match = re.fullmatch(r"[0-9]+(\.[0-9]+)?", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a positive number such as 5 or 2.5")
    return int(match[0]) if match[1] is None else float(match[0])


def _size_value(value: object) -> object:
    return parse_size(value) if isinstance(value, str) else value


def _duration_value(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _path_value(value: object) -> object:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _show_size(value: int | None) -> str | None:
    return None if value is None else format_size(value)


def _show_duration(value: int | None) -> str | None:
    return None if value is None else format_duration(value)


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


@dataclass(frozen=True, slots=True)
class _Setting:
    """How one setting is read from each kind of source, checked and shown."""

    expected: str
    """What a valid value is, for error messages."""
    valid: Callable[[Any], bool]
    from_text: Callable[[str], object] = _same
    """An environment variable's text to a value."""
    from_value: Callable[[object], object] = _same
    """A file's or an argument's value to a value: units are read here."""
    show: Callable[[Any], object] = _same
    """The value as a config file would write it."""


_MAP_SIZE = _Setting(
    f"an int of at least {MIN_MAP_SIZE} (bytes) or a size such as '1GiB'",
    lambda value: _is_int(value, MIN_MAP_SIZE),
    parse_size,
    _size_value,
    _show_size,
)
_OPTIONAL_SIZE = _Setting(
    "an int of at least 1 (bytes) or a size such as '500MB'",
    lambda value: value is None or _is_int(value, 1),
    parse_size,
    _size_value,
    _show_size,
)
_OPTIONAL_DURATION = _Setting(
    "an int of at least 1 (seconds) or a duration such as '30d', '12h', '15m' or '45s'",
    lambda value: value is None or _is_int(value, 1),
    parse_duration,
    _duration_value,
    _show_duration,
)
_SETTINGS: dict[str, _Setting] = {
    "path": _Setting(
        "a non-empty path or postgresql:// URL",
        lambda value: isinstance(value, str) and value != "",
        _same,
        _path_value,
    ),
    "enabled": _Setting("true or false", lambda value: type(value) is bool, _bool_text),
    "durability": _Setting(
        f"one of {', '.join(DURABILITIES)}", lambda value: value in DURABILITIES
    ),
    "map_size": _MAP_SIZE,
    "max_map_size": _MAP_SIZE,
    "checkpoint_policy": _Setting(
        f"one of {', '.join(CHECKPOINT_POLICIES)}", lambda value: value in CHECKPOINT_POLICIES
    ),
    "checkpoint_interval": _Setting(
        "a positive number (steps for every_n_steps, seconds for time_based)",
        lambda value: (
            value is None or (type(value) in (int, float) and math.isfinite(value) and value > 0)
        ),
        _number_text,
    ),
    "dedup": _Setting("true or false", lambda value: type(value) is bool, _bool_text),
    "compression": _Setting(
        f"one of {', '.join(COMPRESSIONS)}", lambda value: value in COMPRESSIONS
    ),
    "chunk_cache": _Setting(
        "an int of at least 0 (bytes) or a size such as '64MiB'",
        lambda value: _is_int(value, 0),
        parse_size,
        _size_value,
        _show_size,
    ),
    "retention_keep_last": _Setting(
        "an int of at least 1", lambda value: value is None or _is_int(value, 1), _int_text
    ),
    "retention_max_age": _OPTIONAL_DURATION,
    "retention_max_size": _OPTIONAL_SIZE,
    "retention_finished_max_age": _OPTIONAL_DURATION,
}
ENV_VARIABLES = {f"{ENV_PREFIX}{name.upper()}": name for name in _SETTINGS}
"""Every ``LMDBSTATE_*`` variable, and the setting it sets."""


def _unknown(name: str, source: str, known: Iterable[str] = _SETTINGS) -> ConfigError:
    return ConfigError(
        f"unknown setting {name!r} in {source}", hint=f"use one of: {', '.join(known)}"
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration: every setting, and where each value came from.

    Build one with :func:`load_config`, which reads every source; constructing it directly
    checks the values given and takes the defaults for the rest.

    Raises:
        ConfigError: a value of the wrong type or out of range, or settings that contradict
            each other; the message names the setting and its source.
    """

    path: str = DEFAULT_PATH
    """The store's directory (``load_config`` makes it absolute against the working directory)."""
    enabled: bool = True
    """False keeps checkpoints in memory: the same API, nothing written to disk."""
    durability: Durability = "sync"
    """``"sync"`` or ``"async"``, as in ``CheckpointStore``."""
    map_size: int = DEFAULT_MAP_SIZE
    """Initial LMDB map size in bytes."""
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    """The map doubles when full, up to this many bytes."""
    checkpoint_policy: CheckpointPolicy = "every_step"
    """When an executor checkpoints after a step."""
    checkpoint_interval: int | float | None = None
    """Steps between checkpoints for ``every_n_steps`` (an int >= 1); seconds for
    ``time_based`` (> 0); ignored by the other policies."""
    dedup: bool = True
    """Long lists of states kept once, as chunks (record format 2), as in ``CheckpointStore``."""
    compression: str = "none"
    """``"zstd"`` compresses chunks (the ``zstd`` extra); ``"none"`` does not."""
    chunk_cache: int = DEFAULT_CHUNK_CACHE
    """Bytes of chunks kept in memory for reads."""
    retention_keep_last: int | None = None
    """Checkpoints kept per workflow (for retention)."""
    retention_max_age: int | None = None
    """Seconds after which checkpoints may be deleted (for retention)."""
    retention_max_size: int | None = None
    """Live bytes the store is held under (for retention)."""
    retention_finished_max_age: int | None = None
    """Seconds after which finished workflows may be deleted (for retention)."""
    sources: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    """Where each setting's value came from: ``"default"``, a file (``/dir/lmdbstate.toml``,
    ``/dir/pyproject.toml [tool.lmdbstate]``), ``"env NAME"`` or ``"argument"``."""

    def __post_init__(self) -> None:
        if not self.sources:
            inferred = {
                item.name: "default" if getattr(self, item.name) == item.default else "argument"
                for item in fields(self)
                if item.name in _SETTINGS
            }
            object.__setattr__(self, "sources", MappingProxyType(inferred))
        for name, setting in _SETTINGS.items():
            value = getattr(self, name)
            if not setting.valid(value):
                raise self._invalid(name, f"expected {setting.expected}, got {value!r}")
        if self.max_map_size < self.map_size:
            raise self._invalid(
                "max_map_size",
                f"{self.max_map_size} is smaller than map_size {self.map_size} "
                f"(from {self.sources.get('map_size', 'argument')})",
            )
        interval = self.checkpoint_interval
        policy_source = self.sources.get("checkpoint_policy", "argument")
        policy = f"the {self.checkpoint_policy} policy (from {policy_source})"
        interval_hint = (
            "set checkpoint_interval: `lmdbstate run --interval N`, LMDBSTATE_CHECKPOINT_INTERVAL "
            "or the config file"
        )
        if self.checkpoint_policy == "every_n_steps" and type(interval) is not int:
            raise self._invalid(
                "checkpoint_interval",
                f"{policy} needs a whole number of steps, got {interval!r}",
                interval_hint,
            )
        if self.checkpoint_policy == "time_based" and interval is None:
            raise self._invalid(
                "checkpoint_interval", f"{policy} needs a number of seconds", interval_hint
            )

    def _invalid(self, name: str, reason: str, hint: str = _HINT) -> ConfigError:
        return ConfigError(f"{name} from {self.sources.get(name, 'argument')}: {reason}", hint=hint)

    def settings(self) -> dict[str, object]:
        """Every setting as a config file would write it (sizes and ages in units; None: unset)."""
        return {name: setting.show(getattr(self, name)) for name, setting in _SETTINGS.items()}

    def retention_policy(self) -> RetentionPolicy | None:
        """The ``retention_*`` settings as a policy; None when none is set."""
        policy = RetentionPolicy(
            keep_last=self.retention_keep_last,
            max_age=self.retention_max_age,
            max_size=self.retention_max_size,
            finished_max_age=self.retention_finished_max_age,
        )
        return None if policy == RetentionPolicy() else policy

    def open_store(self, *, readonly: bool = False) -> CheckpointStore:
        """Open the configured store; an in-memory one when ``enabled`` is False.

        A store opened for writing enforces the retention policy as it is written to.

        Raises:
            StoreError: as ``CheckpointStore`` raises it.
        """
        return CheckpointStore(
            self.path if self.enabled else MEMORY_PATH,
            durability=self.durability,
            map_size=self.map_size,
            max_map_size=self.max_map_size,
            readonly=readonly,
            retention=self.retention_policy(),
            dedup=self.dedup,
            chunk_cache=self.chunk_cache,
            compression=None if self.compression == "none" else self.compression,
        )


# -- loading ----------------------------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any] | None:
    """The parsed document, or None when there is no such file."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint=_HINT) from exc


def _file_layer(directory: str) -> tuple[str, dict[str, Any]] | None:
    """The config file's source label and its settings; ``lmdbstate.toml`` wins outright."""
    own = os.path.join(directory, CONFIG_FILE)
    document = _read_toml(own)
    if document is not None:
        return own, document
    pyproject = os.path.join(directory, PYPROJECT_FILE)
    document = _read_toml(pyproject)
    tool = {} if document is None else document.get("tool")
    section = tool.get("lmdbstate") if isinstance(tool, dict) else None
    if section is None:
        return None
    source = f"{pyproject} [tool.lmdbstate]"
    if not isinstance(section, dict):
        raise ConfigError(f"{source} must be a table of settings", hint=_HINT)
    return source, section


def _read(name: str, source: str, parse: Callable[[Any], object], raw: object) -> object:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} from {source}: {exc}", hint=_HINT) from exc


def load_config(
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: object,
) -> Config:
    """The configuration from every source, each overriding the ones before it.

    Sources, lowest first: the defaults; ``lmdbstate.toml`` in ``cwd``, or when there is none
    the ``[tool.lmdbstate]`` table of ``pyproject.toml`` there (the two are never merged);
    ``TAPPS_AGENTS_CHECKPOINT_ENABLED``, ``_FREQUENCY`` and ``_INTERVAL``; ``LMDBSTATE_*``
    variables; ``overrides``. A relative ``path`` is made absolute against ``cwd``.

    Args:
        cwd: the directory holding the config file; the process's working directory by default.
        environ: the environment variables; ``os.environ`` by default.
        **overrides: settings given by the caller; sizes and ages may be in units.

    Raises:
        ConfigError: an unreadable file, an unknown setting (in a file, an ``LMDBSTATE_*``
            variable or ``overrides``), a wrong type, an unknown unit or policy, or settings
            that contradict each other; the message names the setting and its source.
    """
    directory = os.path.abspath(os.getcwd() if cwd is None else cwd)
    variables = os.environ if environ is None else environ
    values: dict[str, Any] = {}  # checked by Config, which names each value's source
    sources = dict.fromkeys(_SETTINGS, "default")

    def take(name: str, source: str, value: object) -> None:
        values[name] = value
        sources[name] = source

    found = _file_layer(directory)
    if found is not None:
        source, table = found
        for name, raw in table.items():
            if name not in _SETTINGS:
                raise _unknown(name, source)
            take(name, source, _read(name, source, _SETTINGS[name].from_value, raw))
    for variable, name in TAPPS_VARIABLES.items():
        if variable in variables:
            source = f"env {variable}"
            take(name, source, _read(name, source, _SETTINGS[name].from_text, variables[variable]))
    for variable in sorted(variables):
        if not variable.startswith(ENV_PREFIX) or variable in _OTHER_VARIABLES:
            continue
        source = f"env {variable}"
        if variable not in ENV_VARIABLES:
            raise _unknown(variable.removeprefix(ENV_PREFIX).lower(), source, ENV_VARIABLES)
        name = ENV_VARIABLES[variable]
        take(name, source, _read(name, source, _SETTINGS[name].from_text, variables[variable]))
    for name, raw in overrides.items():
        if name not in _SETTINGS:
            raise _unknown(name, "the arguments")
        take(name, "argument", _read(name, "argument", _SETTINGS[name].from_value, raw))
    path = values.get("path", DEFAULT_PATH)
    if isinstance(path, str) and path not in ("", MEMORY_PATH) and not is_url(path):
        values["path"] = os.path.join(directory, path)
    return replace(Config(), **values, sources=MappingProxyType(sources))


# -- reload -----------------------------------------------------------------------------------

_Signature = tuple[tuple[int, int, int, int] | None, ...]


def _signature(directory: str) -> _Signature:
    """What changes when either config file is edited, replaced, created or removed."""
    found: list[tuple[int, int, int, int] | None] = []
    for name in (CONFIG_FILE, PYPROJECT_FILE):
        try:
            stat = os.stat(os.path.join(directory, name))
        except OSError:
            found.append(None)
        else:
            found.append((stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino))
    return tuple(found)


class ConfigWatcher:
    """The configuration of a long-running executor, reloaded when its file changes.

    The executor calls :meth:`poll` at each checkpoint. It costs two ``stat`` calls; the files
    are read again only when one of them changed. A reload that fails validation keeps the
    previous configuration and logs why, once, at warning level on the ``lmdbstate`` logger.

    Args:
        cwd: as for :func:`load_config`.
        environ: as for :func:`load_config`; ``os.environ`` as it is at each reload by default.
        **overrides: as for :func:`load_config`; they stay in force across reloads.

    Raises:
        ConfigError: the configuration does not validate at the start.
    """

    def __init__(
        self,
        *,
        cwd: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> None:
        self._directory = os.path.abspath(os.getcwd() if cwd is None else cwd)
        self._environ = environ
        self._overrides = overrides
        # Stat before reading: an edit landing in between is then seen by the next poll.
        self._signature = _signature(self._directory)
        self._config = self._load()

    def _load(self) -> Config:
        return load_config(cwd=self._directory, environ=self._environ, **self._overrides)

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    def poll(self) -> Config:
        """The configuration in force, reloaded first if a config file changed since last time."""
        signature = _signature(self._directory)
        if signature == self._signature:
            return self._config
        self._signature = signature
        try:
            config = self._load()
        except ConfigError as exc:
            log.warning("configuration not reloaded, the previous one stays in force: %s", exc)
            return self._config
        if config != self._config:
            log.debug("configuration reloaded from %s", self._directory)
        self._config = config
        return config
