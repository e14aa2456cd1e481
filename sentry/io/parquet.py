"""The row groups of a Parquet file as byte ranges of the file: the unit a dataset signs.

A row group's column chunks are written one after another; its range runs from the first page
of its first column (the dictionary page if there is one) to the end of its last. The footer is
read by pyarrow (the reference Parquet reader; it never executes data); the ranges it gives are
then checked, since the footer is untrusted: contiguous, inside the file, before the footer.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import SentryError

__all__ = ["RowGroup", "row_groups"]


class RowGroup(NamedTuple):
    number: int  # its place in the file (tuple has an index method)
    offset: int
    size: int


def row_groups(path) -> list[RowGroup]:
    """The row groups of the Parquet file at ``path``, in file order; SentryError naming it."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as f:
            meta, end = f.metadata, f.metadata.serialized_size
            groups = [_span(meta.row_group(i)) for i in range(meta.num_row_groups)]
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise SentryError(f"parquet {path}: cannot read its footer ({str(exc)[:120]})") from None
    data_end = os.stat(path).st_size - 8 - end  # the footer, its length and the magic close the file
    out, previous = [], 4  # after the leading magic "PAR1"
    for i, (offset, size) in enumerate(groups):
        if offset is None or offset < previous or offset + size > data_end:
            raise SentryError(f"parquet {path}: row group {i} does not lie in order inside the file's data")
        out.append(RowGroup(i, offset, size))
        previous = offset + size
    return out


def _span(group) -> tuple[int | None, int]:
    """(offset, size) of a row group's column chunks; offset None unless they are contiguous."""
    spans = []
    for j in range(group.num_columns):
        c = group.column(j)
        start = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
        spans.append((start, c.total_compressed_size))
    spans.sort()
    if not spans or any(a + n != b for (a, n), (b, _) in zip(spans, spans[1:])):
        return None, 0
    return spans[0][0], spans[-1][0] + spans[-1][1] - spans[0][0]
