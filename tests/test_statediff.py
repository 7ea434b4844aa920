"""diff_states: the changes between two states, and that applying them gives the new state."""

from __future__ import annotations

import copy
import datetime as dt
import math
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import StateChange, diff_states

LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
)
STATES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


def apply(state: Any, changes: list[StateChange]) -> Any:
    """``state`` with ``changes`` made, in their order (removals of list items last, from the
    end, so that indexes stay valid)."""
    result = copy.deepcopy(state)
    removals = []
    for change in changes:
        if not change.path:
            result = copy.deepcopy(change.new)
            continue
        *parents, last = change.path
        container = result
        for key in parents:
            container = container[key]
        if change.op == "removed":
            removals.append((container, last))
        elif isinstance(container, list) and change.op == "added":
            container.append(copy.deepcopy(change.new))
        else:
            container[last] = copy.deepcopy(change.new)
    for container, last in sorted(
        removals, key=lambda item: -item[1] if isinstance(item[1], int) else 0
    ):
        del container[last]
    return result


@given(STATES, STATES)
def test_applying_the_changes_to_the_old_state_gives_the_new_one(old: Any, new: Any) -> None:
    assert apply(old, diff_states(old, new)) == new


@given(STATES)
def test_a_state_has_no_change_against_itself(state: Any) -> None:
    assert diff_states(state, copy.deepcopy(state)) == []


def test_each_change_names_its_path_and_both_values() -> None:
    old = {"cursor": 200, "done": ["a", "b"], "scratch": {"tmp": 1}, "n": 1}
    new = {"cursor": 300, "done": ["a", "b", "c"], "n": 1.0, "extra": (1, 2)}
    assert diff_states(old, new) == [
        StateChange("changed", ("cursor",), 200, 300),
        StateChange("added", ("done", 2), None, "c"),
        StateChange("removed", ("scratch",), {"tmp": 1}, None),
        StateChange("changed", ("n",), 1, 1.0),  # equal in Python, not the same state
        StateChange("added", ("extra",), None, (1, 2)),
    ]


def test_a_changed_type_is_one_change_and_nan_equals_nan() -> None:
    assert diff_states({"a": [1, 2]}, {"a": {"x": 1}}) == [
        StateChange("changed", ("a",), [1, 2], {"x": 1})
    ]
    assert diff_states([1, 2], (1, 2)) == [StateChange("changed", (), [1, 2], (1, 2))]
    assert diff_states({"x": math.nan}, {"x": math.nan}) == []
    assert diff_states({1, 2}, {1, 3}) == [StateChange("changed", (), {1, 2}, {1, 3})]


def test_keys_and_leaves_differ_as_the_store_tells_them_apart() -> None:
    assert diff_states({1: "a"}, {1.0: "a"}) == [
        StateChange("removed", (1,), "a", None),
        StateChange("added", (1.0,), None, "a"),
    ]
    assert [c.op for c in diff_states({1: "x"}, {True: "x"})] == ["removed", "added"]
    assert diff_states({1}, {1.0}) == [StateChange("changed", (), {1}, {1.0})]
    assert diff_states(0.0, -0.0) == [StateChange("changed", (), 0.0, -0.0)]
    assert diff_states(Decimal("1.0"), Decimal("1.00")) != []
    noon = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert diff_states(noon, noon.astimezone(dt.timezone(dt.timedelta(hours=1)))) != []
    assert diff_states(noon, noon) == []


def test_depth_costs_no_recursion() -> None:
    old: Any = "leaf"
    new: Any = "changed"
    for _ in range(10_000):
        old, new = [old], [new]
    (change,) = diff_states(old, new)
    assert change.path == (0,) * 10_000
    assert (change.old, change.new) == ("leaf", "changed")
