"""What changed between two states: the changes at their leaves, with the path to each.

Pure: no store, no I/O. Maps are compared key by key and lists (and tuples) index by index, to
any depth; any other value, a set included, is compared whole. A value whose type changed
(a list become a map, an int become a float) is one change at its path, not a change of
everything under it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from .models import StateChange


def diff_states(old: object, new: object) -> list[StateChange]:
    """The changes that turn ``old`` into ``new``, in the order of their paths in the states.

    A map's keys are visited in ``old``'s order, then the keys only ``new`` has; a list's
    indexes in order. Equal states give an empty list.
    """
    return list(_changes(old, new, ()))


def _changes(old: object, new: object, path: tuple[object, ...]) -> Iterator[StateChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key in new:
                yield from _changes(value, new[key], (*path, key))
            else:
                yield StateChange("removed", (*path, key), value, None)
        for key, value in new.items():
            if key not in old:
                yield StateChange("added", (*path, key), None, value)
    elif (isinstance(old, list) and isinstance(new, list)) or (
        isinstance(old, tuple) and isinstance(new, tuple)
    ):
        for index in range(min(len(old), len(new))):
            yield from _changes(old[index], new[index], (*path, index))
        for index in range(len(new), len(old)):
            yield StateChange("removed", (*path, index), old[index], None)
        for index in range(len(old), len(new)):
            yield StateChange("added", (*path, index), None, new[index])
    elif type(old) is not type(new) or (old != new and not _both_nan(old, new)):
        # Compared with their types: 1 and 1.0 and True are equal in Python, not in a state.
        yield StateChange("changed", path, old, new)


def _both_nan(old: object, new: object) -> bool:
    return isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)
