"""Checkpoint policies: after each completed step, whether to checkpoint, and why.

A policy holds no counters of its own. What drives it (the steps completed, and the step count
and time of the last checkpoint) is passed in by the ``Checkpointer``, which reads them back
from the newest checkpoint's metadata on restore: nothing extra is stored, and a resumed run
decides exactly as an uninterrupted one would have from the same checkpoint.

The names are those of ``Config.checkpoint_policy``; the ``Checkpointer`` adds the first and
the final checkpoint of a workflow whatever the policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import CHECKPOINT_POLICIES, CheckpointPolicy, Config
from .errors import ConfigError

# The triggers a checkpoint's metadata names.
TRIGGER_START = "start"
"""The first checkpoint of a workflow: the state it started from."""
TRIGGER_STEP = "step"
"""``every_step``."""
TRIGGER_STEP_COUNT = "step_count"
"""``every_n_steps``: n steps completed since the last checkpoint."""
TRIGGER_GATE = "gate"
"""``on_gates``: the step is a gate."""
TRIGGER_TIME = "time"
"""``time_based``: the first completed step, or the interval passed since the last checkpoint."""
TRIGGER_REQUESTED = "requested"
"""The step or the executor asked for a checkpoint (``Checkpointer.force``)."""
TRIGGER_FINAL = "final"
"""The last step of the workflow completed."""

_INTERVALS = {"every_n_steps": "a whole number of steps >= 1", "time_based": "seconds > 0"}


@dataclass(frozen=True, slots=True)
class Policy:
    """A checkpoint policy: one of ``CHECKPOINT_POLICIES``, with its interval when it takes one.

    Use the module's ``every_step``, ``on_gates`` and ``manual``, or ``every_n_steps(n)`` and
    ``time_based(seconds)``, or ``Policy.from_config(config)``.

    Raises:
        ConfigError: an unknown name, or an interval missing, out of range or not taken.
    """

    name: CheckpointPolicy
    interval: int | float | None = None
    """Steps for ``every_n_steps``, seconds for ``time_based``; None for the others."""
    _threshold: float = field(default=0.0, init=False, repr=False, compare=False)
    """The interval in the unit ``decide`` compares: steps, or nanoseconds."""

    def __post_init__(self) -> None:
        if self.name not in CHECKPOINT_POLICIES:
            raise ConfigError(
                f"unknown checkpoint policy {self.name!r}",
                hint=f"use one of: {', '.join(CHECKPOINT_POLICIES)}",
            )
        threshold = _threshold(self.name, self.interval)
        if threshold is None:
            expected = _INTERVALS.get(self.name, "none")
            raise ConfigError(
                f"the {self.name} policy takes an interval of {expected}, not {self.interval!r}"
            )
        object.__setattr__(self, "_threshold", threshold)

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """The policy a configuration names (an interval it does not take is left out)."""
        interval = config.checkpoint_interval if config.checkpoint_policy in _INTERVALS else None
        return cls(config.checkpoint_policy, interval)

    def decide(
        self, *, completed: int, gate: bool, last_completed: int, last_ns: int, now_ns: int
    ) -> str | None:
        """The trigger for a checkpoint after a step, or None for no checkpoint.

        Args:
            completed: steps completed so far, the one just completed included.
            gate: the step just completed is a gate.
            last_completed: steps that were complete at the last checkpoint.
            last_ns: when the last checkpoint was written (ns since the epoch).
            now_ns: the time now (ns since the epoch).
        """
        match self.name:
            case "every_step":
                return TRIGGER_STEP
            case "every_n_steps":
                due = completed - last_completed >= self._threshold
                return TRIGGER_STEP_COUNT if due else None
            case "on_gates":
                return TRIGGER_GATE if gate else None
            case "time_based":
                elapsed = now_ns - last_ns >= self._threshold
                return TRIGGER_TIME if completed == 1 or elapsed else None
            case "manual":
                return None

    def __str__(self) -> str:
        return self.name if self.interval is None else f"{self.name} ({self.interval})"


def _threshold(name: CheckpointPolicy, interval: int | float | None) -> float | None:
    """The interval in the unit ``decide`` compares; None when the policy does not take it."""
    if name == "every_n_steps":
        return interval if type(interval) is int and interval >= 1 else None
    if name == "time_based":
        if (
            isinstance(interval, int | float)
            and type(interval) is not bool
            and math.isfinite(interval)
            and interval > 0
        ):
            return interval * 1e9
        return None
    return 0.0 if interval is None else None


every_step = Policy("every_step")
"""Checkpoint after every step."""
on_gates = Policy("on_gates")
"""Checkpoint after steps marked as gates."""
manual = Policy("manual")
"""Checkpoint only when the step or the executor asks (and at the first and final step)."""


def every_n_steps(n: int) -> Policy:
    """Checkpoint once ``n`` steps have completed since the last checkpoint.

    Raises:
        ConfigError: ``n`` is not an int >= 1.
    """
    return Policy("every_n_steps", n)


def time_based(seconds: float) -> Policy:
    """Checkpoint after the first step, then once ``seconds`` have passed since the last one.

    Raises:
        ConfigError: ``seconds`` is not a number > 0.
    """
    return Policy("time_based", seconds)
