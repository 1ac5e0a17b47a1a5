"""LiDAR point files: KITTI-style ``.bin`` (float32 x y z intensity) and ``.pcd`` (ASCII or
binary, fields x y z intensity). Readers return ``[N, 4]`` float32 and raise
``SourceFormatError`` naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_PCD_TYPES = {("F", 4): np.float32, ("F", 8): np.float64, ("I", 1): np.int8, ("I", 2): np.int16,
              ("I", 4): np.int32, ("U", 1): np.uint8, ("U", 2): np.uint16, ("U", 4): np.uint32}


class SourceFormatError(ValueError):
    """A source file (YAML or point cloud) is malformed; the message names the file."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = str(path)
        self.what = what


def read_bin(path: Path | str) -> np.ndarray:
    """``.bin`` -> [N, 4] float32."""
    raw = Path(path).read_bytes()
    if len(raw) % 16:
        raise SourceFormatError(path, f"size {len(raw)} bytes is not a multiple of 16 (4 float32 per point)")
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()


def _parse_pcd_header(path: Path | str, raw: bytes) -> tuple[dict[str, list[str]], int]:
    header: dict[str, list[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise SourceFormatError(path, "pcd header has no DATA line")
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        name, *values = line.split()
        header[name.upper()] = values
        if name.upper() == "DATA":
            return header, offset


def read_pcd(path: Path | str) -> np.ndarray:
    """``.pcd`` (DATA ascii or binary; needs fields x y z, intensity optional -> 0) -> [N, 4] float32."""
    raw = Path(path).read_bytes()
    header, offset = _parse_pcd_header(path, raw)
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        kinds = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        n_points = int(header["POINTS"][0])
    except (KeyError, ValueError, IndexError) as exn:
        raise SourceFormatError(path, f"pcd header lacks or garbles FIELDS/SIZE/TYPE/POINTS ({exn})") from exn
    if not (len(names) == len(sizes) == len(kinds) == len(counts)) or any(c != 1 for c in counts):
        raise SourceFormatError(path, "pcd FIELDS/SIZE/TYPE/COUNT disagree (only COUNT 1 is supported)")
    missing = [f for f in ("x", "y", "z") if f not in names]
    if missing:
        raise SourceFormatError(path, f"pcd has no field(s) {missing}; fields are {names}")
    try:
        dtype = np.dtype([(n, _PCD_TYPES[(k.upper(), s)]) for n, k, s in zip(names, kinds, sizes)])
    except KeyError as exn:
        raise SourceFormatError(path, f"unsupported pcd TYPE/SIZE {exn}") from exn
    encoding = header["DATA"][0].lower() if header["DATA"] else ""
    if encoding == "binary":
        body = raw[offset:]
        if len(body) < n_points * dtype.itemsize:
            raise SourceFormatError(path, f"binary pcd truncated: {len(body)} bytes for {n_points} points")
        table = np.frombuffer(body, dtype=dtype, count=n_points)
        columns = {n: table[n].astype(np.float32) for n in names}
    elif encoding == "ascii":
        text = raw[offset:].decode("ascii", errors="replace").split()
        if len(text) != n_points * len(names):
            raise SourceFormatError(path, f"ascii pcd has {len(text)} values, expected {n_points} x {len(names)}")
        try:
            values = np.array(text, dtype=np.float64).reshape(n_points, len(names)) if n_points else \
                np.zeros((0, len(names)))
        except ValueError as exn:
            raise SourceFormatError(path, f"ascii pcd has a non-numeric value ({exn})") from exn
        columns = {n: values[:, i].astype(np.float32) for i, n in enumerate(names)}
    else:
        raise SourceFormatError(path, f"unsupported pcd DATA {encoding!r} (ascii or binary only)")
    out = np.zeros((n_points, 4), dtype=np.float32)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        if name in columns:
            out[:, i] = columns[name]
    return out


def read_points(path: Path | str) -> np.ndarray:
    """Read a ``.bin`` or ``.pcd`` file -> [N, 4] float32 (x, y, z, intensity)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".bin":
        return read_bin(path)
    if suffix == ".pcd":
        return read_pcd(path)
    raise SourceFormatError(path, f"unknown point file type {suffix!r} (expected .bin or .pcd)")


def write_bin(path: Path | str, points: np.ndarray) -> None:
    """[N, 4] -> ``.bin`` (float32)."""
    np.ascontiguousarray(points, dtype=np.float32).tofile(str(path))


def write_pcd(path: Path | str, points: np.ndarray, *, binary: bool = True) -> None:
    """[N, 4] -> ``.pcd`` with float32 fields x y z intensity (binary or ASCII)."""
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 4)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\n"
        "SIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
        f"WIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\n"
        f"DATA {'binary' if binary else 'ascii'}\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(pts.tobytes())
        else:
            f.write("".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in pts).encode("ascii"))
