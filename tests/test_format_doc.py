"""docs/format.md is the authoritative spec: its tables must match the code."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from lmdbstate import chunking, chunkstore, codec, migrations, records

FORMAT_DOC = Path(__file__).parent.parent / "docs" / "format.md"
_STRUCT_CODES = {("bytes", 2): "2s", ("u8", 1): "B", ("u32", 4): "I", ("u64", 8): "Q"}


def table_after(heading: str) -> list[list[str]]:
    text = FORMAT_DOC.read_text()
    section = text[text.index(heading) :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the column names


def test_header_table_matches_the_struct() -> None:
    rows = table_after("## Records")
    assert [row[0] for row in rows] == [
        "magic",
        "format",
        "flags",
        "digest",
        "created_ns",
        "body_len",
    ]
    offset = 0
    codes = "<"
    for name, start, size, kind, _ in rows:
        assert int(start) == offset, name
        codes += _STRUCT_CODES[(kind, int(size))]
        offset += int(size)
    assert codes == records.HEADER.format
    assert offset == records.HEADER_SIZE == struct.calcsize(codes)


def test_documented_constants_match() -> None:
    rows = {row[0]: row for row in table_after("## Records")}
    assert f"`{records.MAGIC!r}`".replace("b'", 'b"').replace("'`", '"`') in rows["magic"][4]
    assert rows["format"][4].endswith(f"{records.FORMAT_VERSION} or {records.CHUNKED_FORMAT}")
    text = FORMAT_DOC.read_text()
    assert f"Record formats: **{records.FORMAT_VERSION}** (the state whole)" in text
    assert f"and **{records.CHUNKED_FORMAT}** (its long lists as" in text
    assert f"Store format: **{migrations.STORE_FORMAT}**" in text


def test_chunk_constants_match() -> None:
    text = FORMAT_DOC.read_text()
    rows = {row[0]: row for row in table_after("## Chunks")}
    assert rows["magic"][3] == f"`{chunkstore.MAGIC!r}`".replace("b'", 'b"').replace("'`", '"`')
    assert rows["version"][3] == str(chunkstore.VERSION)
    assert rows["flags"][3].startswith(f"bit {chunkstore.FLAG_NODE.bit_length() - 1}: ")
    assert int(rows["payload"][1]) == chunkstore.HEADER_SIZE
    assert (int(rows["refs"][1]), int(rows["refs"][2])) == (4, 4)
    assert 2 ** (8 * int(rows["refs"][2])) - 1 == chunkstore.MAX_REFS
    assert f"at least {chunking.INLINE_LIMIT // 1024} KiB (`chunking.INLINE_LIMIT`)" in text
    assert f"at least {chunking.MIN_ITEMS} items (`chunking.MIN_ITEMS`)" in text
    assert f"every {chunking.FLAT_EVERY}th node of a chain (`chunking.FLAT_EVERY`)" in text


def test_extension_table_matches_the_codec() -> None:
    rows = table_after("### Extension types")
    documented = {int(row[0]): row[1].strip("`") for row in rows}
    in_code = {
        value: name.removeprefix("EXT_")
        for name, value in vars(codec).items()
        if re.fullmatch(r"EXT_[A-Z_]+", name)
    }
    assert set(documented) == set(in_code)
    for code, python_type in documented.items():
        assert python_type.split(".")[-1].lower() == in_code[code].replace("_", "").lower(), code
