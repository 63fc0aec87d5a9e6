"""Open Inference Protocol datatypes, and tensors as raw bytes (the binary tensor data extension).

Raw tensors are row-major and little-endian; a ``BYTES`` element is a 4-byte little-endian
length followed by its bytes. No Flask here.
"""

from __future__ import annotations

import numpy as np

NUMERIC_DTYPES: dict[str, np.dtype[np.generic]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "|b1",
        "UINT8": "|u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "|i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}


def datatype_of(values: np.ndarray) -> str:
    """The V2 datatype of a numpy array: its numeric type, else ``BYTES``."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b":
        return "BOOL"
    if kind == "i":
        return f"INT{size * 8}"
    if kind == "u":
        return f"UINT{size * 8}"
    if kind == "f":
        return f"FP{size * 8}"
    return "BYTES"


def from_bytes(raw: memoryview, datatype: str) -> np.ndarray:
    """A flat float64 array from the raw bytes of a numeric tensor (``len(raw)`` checked by the caller)."""
    if datatype == "BOOL":
        values: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
    else:
        values = np.frombuffer(raw, dtype=NUMERIC_DTYPES[datatype])
    return values.astype(np.float64)


def to_bytes(values: np.ndarray, datatype: str) -> bytes:
    """The raw bytes of ``values`` sent as ``datatype``."""
    if datatype != "BYTES":
        return np.ascontiguousarray(values, dtype=NUMERIC_DTYPES[datatype]).tobytes()
    parts = []
    for item in values.ravel().tolist():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts += [len(data).to_bytes(4, "little"), data]
    return b"".join(parts)


def elements(raw: memoryview, datatype: str) -> np.ndarray:
    """The flat array of a tensor's raw bytes: numbers as ``from_bytes`` reads them, ``BYTES`` as strings."""
    if datatype != "BYTES":
        return from_bytes(raw, datatype)
    data, out, offset = bytes(raw), [], 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "little")
        out.append(data[offset + 4 : offset + 4 + size].decode(errors="replace"))
        offset += 4 + size
    return np.asarray(out)
