"""LiDAR point files: KITTI-style ``.bin`` (float32 x y z intensity) and ``.pcd`` (ASCII, binary or
binary_compressed, as PCL and open3d write them). Readers return ``[N, 4]`` float32 and raise
``SourceFormatError`` naming the file and what is wrong. Rows are returned as stored (non-finite ones
included); ``trainer.data.point_clean`` drops and counts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.lzf import LZFError, lzf_decompress

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


def _pcd_layout(path: Path | str, header: dict[str, list[str]]) -> tuple[list[str], np.dtype, int, str]:
    """(field names, per-point dtype, points, DATA encoding) of a parsed header."""
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
    if n_points < 0 or len(set(names)) != len(names):
        raise SourceFormatError(path, f"pcd POINTS {n_points} is negative or FIELDS {names} repeat a name")
    try:
        dtype = np.dtype([(n, _PCD_TYPES[(k.upper(), s)]) for n, k, s in zip(names, kinds, sizes)])
    except KeyError as exn:
        raise SourceFormatError(path, f"unsupported pcd TYPE/SIZE {exn}") from exn
    encoding = header["DATA"][0].lower() if header["DATA"] else ""
    return names, dtype, n_points, encoding


def _binary_columns(path, body: bytes, dtype: np.dtype, n_points: int) -> dict[str, np.ndarray]:
    """``DATA binary``: one record per point (array of structs)."""
    if len(body) < n_points * dtype.itemsize:
        raise SourceFormatError(path, f"binary pcd truncated: {len(body)} bytes for {n_points} points")
    table = np.frombuffer(body, dtype=dtype, count=n_points)
    return {name: table[name] for name in dtype.names}


def _compressed_columns(path, body: bytes, dtype: np.dtype, n_points: int) -> dict[str, np.ndarray]:
    """``DATA binary_compressed``: uint32 compressed size, uint32 raw size, then LZF data holding each field's
    values for all points one field after the other (struct of arrays), as PCL and open3d write it."""
    if len(body) < 8:
        raise SourceFormatError(path, "binary_compressed pcd truncated: no size words")
    packed, raw_size = (int(v) for v in np.frombuffer(body, dtype="<u4", count=2))
    if raw_size != n_points * dtype.itemsize:
        raise SourceFormatError(path, f"binary_compressed pcd announces {raw_size} bytes, {n_points} points of "
                                      f"{dtype.itemsize} bytes need {n_points * dtype.itemsize}")
    if len(body) < 8 + packed:
        raise SourceFormatError(path, f"binary_compressed pcd truncated: {len(body) - 8} of {packed} bytes")
    try:
        raw = lzf_decompress(body[8:8 + packed], raw_size)
    except LZFError as exn:
        raise SourceFormatError(path, f"binary_compressed pcd does not decompress: {exn}") from exn
    columns, offset = {}, 0
    for name in dtype.names:
        field = dtype.fields[name][0]
        columns[name] = np.frombuffer(raw, dtype=field, count=n_points, offset=offset)
        offset += n_points * field.itemsize
    return columns


def _ascii_columns(path, body: bytes, dtype: np.dtype, n_points: int) -> dict[str, np.ndarray]:
    """``DATA ascii``: whitespace-separated values, one point per line. A float ``rgb`` keeps its bit pattern."""
    text = body.decode("ascii", errors="replace").split()
    names = dtype.names
    if len(text) != n_points * len(names):
        raise SourceFormatError(path, f"ascii pcd has {len(text)} values, expected {n_points} x {len(names)}")
    try:
        values = np.array(text, dtype=np.float64).reshape(n_points, len(names))
    except ValueError as exn:
        raise SourceFormatError(path, f"ascii pcd has a non-numeric value ({exn})") from exn
    columns = {}
    for i, name in enumerate(names):
        field = dtype.fields[name][0]
        column = values[:, i]
        if name in _COLOUR_FIELDS and field.kind == "f":  # open3d prints the packed colour as a float
            columns[name] = column.astype(np.float32)
        else:
            columns[name] = column.astype(field)
    return columns


_COLOUR_FIELDS = ("rgb", "rgba")


def intensity_column(columns: dict[str, np.ndarray], n_points: int) -> np.ndarray:
    """[n] float32 intensity of a pcd's columns (docs/DATA_FORMAT.md, "Point files"): a float ``intensity``
    field as it is; an integer one divided by its type's largest value (uint8 / 255, uint16 / 65535, ...);
    without one, a packed ``rgb`` / ``rgba`` field's red channel / 255 (open3d's OPV2V / V2XSet files, read
    as OpenCOOD does); with neither, 0."""
    if "intensity" in columns:
        value = columns["intensity"]
        if value.dtype.kind in "iu":
            return (value.astype(np.float64) / np.iinfo(value.dtype).max).astype(np.float32)
        return value.astype(np.float32)
    for name in _COLOUR_FIELDS:
        if name in columns:
            packed = np.ascontiguousarray(columns[name]).view(np.uint32) if columns[name].itemsize == 4 else \
                columns[name].astype(np.uint32)
            return (((packed >> 16) & 0xFF).astype(np.float32) / np.float32(255.0)).astype(np.float32)
    return np.zeros(n_points, dtype=np.float32)


_PCD_READERS = {"ascii": _ascii_columns, "binary": _binary_columns, "binary_compressed": _compressed_columns}


def read_pcd(path: Path | str) -> np.ndarray:
    """``.pcd`` (DATA ascii, binary or binary_compressed; fields x y z and any others) -> [N, 4] float32, the
    fourth column by ``intensity_column``. ``binary_compressed`` is decompressed in pure Python (about 0.4 s
    for 100k points)."""
    raw = Path(path).read_bytes()
    header, offset = _parse_pcd_header(path, raw)
    names, dtype, n_points, encoding = _pcd_layout(path, header)
    if encoding not in _PCD_READERS:
        raise SourceFormatError(path, f"unsupported pcd DATA {encoding!r} (ascii, binary or binary_compressed)")
    columns = _PCD_READERS[encoding](path, raw[offset:], dtype, n_points)
    out = np.empty((n_points, 4), dtype=np.float32)
    for i, name in enumerate(("x", "y", "z")):
        out[:, i] = columns[name]
    out[:, 3] = intensity_column(columns, n_points)
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
