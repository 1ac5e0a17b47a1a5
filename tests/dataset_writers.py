"""Point files written the way the datasets' own tools write them (test fixtures, not shipped).

- ``write_open3d_pcd``: what open3d's ``write_point_cloud`` produces for a cloud with colours, the form of
  OPV2V / V2XSet's ``.pcd`` files (OpenCOOD stores intensity in the red channel): ``FIELDS x y z rgb``, all
  ``F 4``, the colour packed as bytes (b, g, r, 0) of a float32; ``ascii`` prints each value with ``%.10g``,
  ``binary`` writes records, ``binary_compressed`` writes the LZF-compressed fields one after another.
- ``lzf_compress``: a plain LZF compressor (greedy, 3-byte hash), to write ``binary_compressed`` files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPEN3D_HEADER = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
                 "TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n")


def packed_rgb(red: np.ndarray) -> np.ndarray:
    """[N] red channel values 0..255 (green 0, blue 0) -> [N] float32 of open3d's packed colour."""
    rgba = np.zeros((len(red), 4), dtype=np.uint8)
    rgba[:, 2] = red  # open3d packs (b, g, r, 0)
    return rgba.view("<f4").reshape(-1)


def lzf_compress(data: bytes) -> bytes:
    """LZF stream of ``data`` (literal runs of up to 32 bytes, back references of 3..264 bytes within 8 KiB)."""
    out, literal, table = bytearray(), bytearray(), {}
    i, n = 0, len(data)

    def flush() -> None:
        while literal:
            chunk = literal[:32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
            del literal[:32]

    while i < n:
        key = data[i:i + 3]
        ref = table.get(key) if len(key) == 3 else None
        if len(key) == 3:
            table[key] = i
        if ref is not None and i - ref - 1 < 8192:
            length, limit = 3, min(264, n - i)
            while length < limit and data[ref + length] == data[i + length]:
                length += 1
            flush()
            offset, coded = i - ref - 1, length - 2
            if coded < 7:
                out.append((coded << 5) | (offset >> 8))
            else:
                out += bytes([(7 << 5) | (offset >> 8), coded - 7])
            out.append(offset & 0xFF)
            i += length
        else:
            literal.append(data[i])
            i += 1
    flush()
    return bytes(out)


def write_open3d_pcd(path: Path | str, xyz: np.ndarray, red: np.ndarray, *, data: str = "binary") -> None:
    """``xyz`` [N, 3] and red channel [N] (0..255) as open3d writes them with ``data`` ascii / binary /
    binary_compressed."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    table = np.empty((len(xyz), 4), dtype="<f4")
    table[:, :3], table[:, 3] = xyz, packed_rgb(np.asarray(red))
    body = OPEN3D_HEADER.format(n=len(xyz), data=data).encode("ascii")
    if data == "ascii":
        body += "".join(" ".join("%.10g" % float(v) for v in row) + "\n" for row in table).encode("ascii")
    elif data == "binary":
        body += table.tobytes()
    elif data == "binary_compressed":
        raw = np.ascontiguousarray(table.T).tobytes()  # x of every point, then y, z, rgb
        packed = lzf_compress(raw)
        body += np.array([len(packed), len(raw)], dtype="<u4").tobytes() + packed
    else:
        raise ValueError(f"data must be ascii, binary or binary_compressed, got {data!r}")
    Path(path).write_bytes(body)
