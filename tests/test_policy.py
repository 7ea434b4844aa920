"""Checkpoint policies: each decision, validation, and counters that survive a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lmdbstate import CheckpointStore, Config, ConfigError
from lmdbstate.config import CHECKPOINT_POLICIES
from lmdbstate.policy import (
    Policy,
    every_n_steps,
    every_step,
    manual,
    on_gates,
    time_based,
)
from lmdbstate.runner import Checkpointer

SECOND = 1_000_000_000
TOTAL = 12
GATES = {2, 6}  # step indexes that are gates


def decide(
    policy: Policy, completed: int, *, gate: bool = False, last: int = 0, now: int = 0
) -> str | None:
    return policy.decide(completed=completed, gate=gate, last_completed=last, last_ns=0, now_ns=now)


def test_every_step() -> None:
    assert [decide(every_step, n) for n in range(1, 4)] == ["step"] * 3


def test_every_n_steps_counts_from_the_last_checkpoint() -> None:
    policy = every_n_steps(3)
    assert [decide(policy, n) for n in range(1, 7)] == [
        None,
        None,
        "step_count",
        "step_count",
        "step_count",
        "step_count",
    ]
    assert [decide(policy, n, last=3) for n in range(4, 8)] == [
        None,
        None,
        "step_count",
        "step_count",
    ]


def test_on_gates() -> None:
    assert decide(on_gates, 1) is None
    assert decide(on_gates, 2, gate=True) == "gate"


def test_time_based_takes_the_first_step_then_the_interval() -> None:
    policy = time_based(2.5)
    assert decide(policy, 1, now=0) == "time"
    assert decide(policy, 2, last=1, now=int(2.4 * SECOND)) is None
    assert decide(policy, 2, last=1, now=int(2.5 * SECOND)) == "time"


def test_manual_never_decides() -> None:
    assert [decide(manual, n, gate=True, now=10**12) for n in range(1, 5)] == [None] * 4


@pytest.mark.parametrize(
    ("name", "interval"),
    [
        ("hourly", None),
        ("every_n_steps", None),
        ("every_n_steps", 0),
        ("every_n_steps", 2.0),
        ("every_n_steps", True),
        ("time_based", None),
        ("time_based", -1),
        ("time_based", float("inf")),
        ("time_based", True),
        ("every_step", 3),
        ("manual", 1),
    ],
)
def test_invalid_policies_are_refused(name: str, interval: object) -> None:
    with pytest.raises(ConfigError):
        Policy(name, interval)  # type: ignore[arg-type]


def test_the_names_are_the_configs() -> None:
    made = {every_step, every_n_steps(2), on_gates, time_based(1), manual}
    assert sorted(policy.name for policy in made) == sorted(CHECKPOINT_POLICIES)


def test_from_config_drops_an_interval_the_policy_does_not_take() -> None:
    assert Policy.from_config(Config(checkpoint_interval=5)) == every_step
    config = Config(checkpoint_policy="every_n_steps", checkpoint_interval=4)
    assert Policy.from_config(config) == every_n_steps(4)
    config = Config(checkpoint_policy="time_based", checkpoint_interval=0.5)
    assert Policy.from_config(config) == time_based(0.5)
    assert str(time_based(0.5)) == "time_based (0.5)"
    assert str(on_gates) == "on_gates"


# -- counters across a restart ------------------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[CheckpointStore]:
    with CheckpointStore(":memory:") as opened:
        yield opened


def steps(checkpointer: Checkpointer, indexes: range) -> list[tuple[int, str]]:
    """Complete steps; returns (steps completed, trigger) for each checkpoint written."""
    written = []
    for index in indexes:
        record = checkpointer.after_step(f"s{index}", {"i": index}, gate=index in GATES)
        if record.trigger is not None:
            written.append((record.completed, record.trigger))
    return written


@pytest.mark.parametrize(
    "policy", [every_step, every_n_steps(3), every_n_steps(5), on_gates, manual], ids=str
)
@pytest.mark.parametrize("crash_after", [0, 1, 4, 7, 11])
def test_a_restarted_run_decides_as_an_uninterrupted_one(
    memory: CheckpointStore, policy: Policy, crash_after: int
) -> None:
    whole = Checkpointer(memory, "whole", total_steps=TOTAL, policy=policy)
    whole.start({"i": -1})
    expected = steps(whole, range(TOTAL))
    whole.complete()

    first = Checkpointer(memory, "restarted", total_steps=TOTAL, policy=policy)
    first.start({"i": -1})
    before = steps(first, range(crash_after))
    first.release()  # the process dies here: the status stays running

    second = Checkpointer(memory, "restarted", total_steps=TOTAL, policy=policy)
    ckpt = second.restore()
    assert ckpt is not None
    saved = before[-1][0] if before else 0  # steps done at the newest checkpoint
    assert (second.completed, ckpt.meta["completed"]) == (saved, saved)
    after = steps(second, range(saved, TOTAL))  # every step after it runs again
    second.complete()
    assert sorted(set(before + after)) == expected
    assert expected[-1] == (TOTAL, "final")


def test_time_based_counts_from_the_last_checkpoint_across_a_restart(
    memory: CheckpointStore,
) -> None:
    policy = time_based(3600)
    first = Checkpointer(memory, "wf", total_steps=TOTAL, policy=policy)
    first.start({})
    assert first.after_step("s0", {}).trigger == "time"  # the first step
    assert first.after_step("s1", {}).trigger is None
    first.release()

    second = Checkpointer(memory, "wf", total_steps=TOTAL, policy=policy)
    ckpt = second.restore()
    assert ckpt is not None
    assert second.completed == 1
    # Had the restart lost the time of checkpoint 2, an hour would seem to have passed.
    assert second.after_step("s1", {}).trigger is None
    later = ckpt.created_ns + 3600 * SECOND
    assert second.after_step("s2", {}, finished_ns=later).trigger == "time"
