"""What changed between two states: the changes at their leaves, with the path to each.

Pure: no store, no I/O. Maps are compared key by key and lists (and tuples) index by index, to
any depth (the walk keeps its own stack, so depth costs no recursion); any other value, a set
included, is compared whole. Keys and values are compared as the store would keep them: with
their types (``1``, ``1.0`` and ``True`` differ) and, for leaves, by their encoding (``0.0`` and
``-0.0``, ``Decimal("1.0")`` and ``Decimal("1.00")`` differ; NaN equals NaN). A value whose type
changed (a list become a map) is one change at its path, not a change of everything under it.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import codec
from .errors import CodecError
from .models import StateChange

_Task = tuple[object, object, tuple[object, ...]] | StateChange
"""A pair of values still to compare at a path, or a change found, in the order of output."""


def diff_states(old: object, new: object) -> list[StateChange]:
    """The changes that turn ``old`` into ``new``, in the order of their paths in the states.

    A map's keys are visited in ``old``'s order, then the keys only ``new`` has; a list's
    indexes in order. Equal states give an empty list.
    """
    return list(_changes(old, new))


def _changes(old: object, new: object) -> Iterator[StateChange]:
    stack: list[_Task] = [(old, new, ())]
    while stack:
        task = stack.pop()
        if isinstance(task, StateChange):
            yield task
            continue
        before, after, path = task
        stack.extend(reversed(_compared(before, after, path)))


def _compared(old: object, new: object, path: tuple[object, ...]) -> list[_Task]:
    """What comparing ``old`` with ``new`` at ``path`` gives, one level down, in output order."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[_Task] = []
        new_keys = {_typed(key): key for key in new}
        for key, value in old.items():
            match = new_keys.pop(_typed(key), _MISSING)
            if match is _MISSING:
                found.append(StateChange("removed", (*path, key), value, None))
            else:
                found.append((value, new[match], (*path, key)))
        found += [StateChange("added", (*path, key), None, new[key]) for key in new_keys.values()]
        return found
    if (isinstance(old, list) and isinstance(new, list)) or (
        isinstance(old, tuple) and isinstance(new, tuple)
    ):
        common = min(len(old), len(new))
        found = [(old[index], new[index], (*path, index)) for index in range(common)]
        found += [StateChange("removed", (*path, i), old[i], None) for i in range(common, len(old))]
        found += [StateChange("added", (*path, i), None, new[i]) for i in range(common, len(new))]
        return found
    return [] if _same_leaf(old, new) else [StateChange("changed", path, old, new)]


_MISSING = object()


def _typed(key: object) -> tuple[type, object]:
    """A map key as the store tells keys apart: ``1``, ``1.0`` and ``True`` are three keys."""
    return type(key), key


def _same_leaf(old: object, new: object) -> bool:
    if type(old) is not type(new):
        return False
    try:
        return codec.encode(old) == codec.encode(new)
    except CodecError:  # not a value a state can hold: Python's equality will have to do
        return old == new
