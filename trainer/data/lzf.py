"""LZF decompression (the codec of PCL / open3d ``DATA binary_compressed`` point files), pure Python.

The stream is a sequence of tokens; the top 3 bits of a token's control byte tell them apart:
- ``000LLLLL``: a literal run of ``L + 1`` bytes follows;
- ``NNNOOOOO [N'] OOOOOOOO``: a back reference of ``N + 2`` bytes (``N == 7``: ``7 + N' + 2``) copied
  from ``offset + 1`` bytes behind the output end, where ``offset`` is the 13 bits ``OOOOO OOOOOOOO``;
  the copy may overlap what it writes (a run).
"""

from __future__ import annotations


class LZFError(ValueError):
    """A compressed stream that is truncated, refers before its start or has the wrong length."""


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress ``data``; the result must be exactly ``expected_size`` bytes (else ``LZFError``)."""
    out = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        ctrl = data[pos]
        pos += 1
        if ctrl < 32:  # literal run
            run = ctrl + 1
            if pos + run > end:
                raise LZFError(f"literal run of {run} bytes at input byte {pos - 1} passes the end ({end} bytes)")
            out += data[pos:pos + run]
            pos += run
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                if pos >= end:
                    raise LZFError("back reference truncated (no length byte)")
                length += data[pos]
                pos += 1
            if pos >= end:
                raise LZFError("back reference truncated (no offset byte)")
            start = len(out) - ((ctrl & 0x1F) << 8) - data[pos] - 1
            pos += 1
            if start < 0:
                raise LZFError(f"back reference to {start}, before the start of the output")
            length += 2
            if start + length <= len(out):
                out += out[start:start + length]
            else:  # overlapping copy: repeat the available tail
                chunk = out[start:]
                while length > 0:
                    piece = chunk[:length]
                    out += piece
                    length -= len(piece)
        if len(out) > expected_size:
            raise LZFError(f"decompresses to more than the {expected_size} bytes announced")
    if len(out) != expected_size:
        raise LZFError(f"decompresses to {len(out)} bytes, {expected_size} announced")
    return bytes(out)
