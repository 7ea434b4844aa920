from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import InvalidSeqError, InvalidWorkflowIdError
from lmdbstate.keys import (
    MAX_WORKFLOW_ID_BYTES,
    age_key,
    checkpoint_key,
    encode_workflow_id,
    split_age_key,
    split_checkpoint_key,
    validate_seq,
    workflow_bounds,
)

workflow_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)
seqs = st.integers(min_value=1, max_value=(1 << 64) - 1)


@pytest.mark.parametrize(
    ("workflow_id", "reason"),
    [
        ("", "empty"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_WORKFLOW_ID_BYTES + 1), "more than 494"),
        ("é" * 251, "502 UTF-8 bytes"),
        ("\ud800", "UTF-8"),
        (b"bytes", "expected str"),
        (42, "expected str"),
        (None, "expected str"),
    ],
)
def test_bad_workflow_ids_are_refused(workflow_id: object, reason: str) -> None:
    with pytest.raises(InvalidWorkflowIdError, match=reason) as caught:
        encode_workflow_id(workflow_id)
    assert caught.value.workflow_id == workflow_id
    assert isinstance(caught.value, ValueError)
    assert caught.value.hint


def test_longest_workflow_id_fits_lmdb_key_limit() -> None:
    raw = encode_workflow_id("x" * MAX_WORKFLOW_ID_BYTES)
    assert len(checkpoint_key(raw, (1 << 64) - 1)) <= 511


@pytest.mark.parametrize("seq", [0, -1, True, False, 1.0, "1", None, 1 << 64])
def test_bad_seqs_are_refused(seq: object) -> None:
    with pytest.raises(InvalidSeqError):
        validate_seq(seq)


@given(workflow_ids, seqs)
def test_checkpoint_key_round_trips(workflow_id: str, seq: int) -> None:
    raw = encode_workflow_id(workflow_id)
    key = checkpoint_key(raw, seq)
    assert split_checkpoint_key(key) == (raw, seq)
    low, high = workflow_bounds(raw)
    assert low <= key < high


@given(st.lists(st.tuples(workflow_ids, seqs), min_size=2, max_size=30))
def test_key_order_is_workflow_then_seq_order(pairs: list[tuple[str, int]]) -> None:
    keyed = sorted(pairs, key=lambda pair: checkpoint_key(encode_workflow_id(pair[0]), pair[1]))
    by_id_then_seq = sorted(pairs, key=lambda pair: (encode_workflow_id(pair[0]), pair[1]))
    assert keyed == by_id_then_seq


@given(workflow_ids, workflow_ids, seqs)
def test_no_other_workflow_falls_inside_a_workflows_bounds(
    first: str, second: str, seq: int
) -> None:
    first_raw, second_raw = encode_workflow_id(first), encode_workflow_id(second)
    low, high = workflow_bounds(first_raw)
    inside = low <= checkpoint_key(second_raw, seq) < high
    assert inside == (first_raw == second_raw)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1), workflow_ids, seqs)
def test_age_key_round_trips_and_orders_by_time(
    created_ns: int, workflow_id: str, seq: int
) -> None:
    key = checkpoint_key(encode_workflow_id(workflow_id), seq)
    assert split_age_key(age_key(created_ns, key)) == (created_ns, key)
    if created_ns:
        assert age_key(created_ns - 1, key) < age_key(created_ns, key)
