"""``.npy`` members: write with ``np.save`` (no pickles), read as zero-copy, read-only views."""

from __future__ import annotations

import io
import re

import numpy as np

_NPY_V1 = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(rb"\{'descr': '([<>|][biuf][0-9]{1,2})', 'fortran_order': (True|False), "
                         rb"'shape': \(((?:[0-9]+, ?)*[0-9]*)\), \} *\n")


def npy_bytes(arr: np.ndarray) -> bytes:
    """The ``.npy`` file of ``arr`` (``allow_pickle=False``: object arrays raise)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` member.

    The header ``np.save`` writes (version 1.0, a plain numeric dtype) is matched directly; any
    other header goes through numpy's own parser (``ast.literal_eval``, ~10x slower per member).
    """
    if data[:8] == _NPY_V1 and len(data) >= 10:
        end = 10 + int.from_bytes(data[8:10], "little")
        found = _NPY_HEADER.fullmatch(data[10:end])
        if found is not None:
            descr, fortran, dims = found.groups()
            shape = tuple(int(d) for d in dims.split(b",") if d.strip())
            return shape, fortran == b"True", np.dtype(descr.decode()), end
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(buf)
    return shape, fortran_order, dtype, buf.tell()


def npy_view(data: bytes) -> np.ndarray:
    """A read-only array viewing the bytes of one ``.npy`` member (no copy; no pickled objects).

    Raises ``ValueError`` (object dtype, a size that does not match the header), ``OSError`` or
    ``EOFError`` (a malformed header)."""
    shape, fortran_order, dtype, offset = _npy_header(data)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")
