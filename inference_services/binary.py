"""The V2 binary tensor extension, checked before kserve decodes it: a malformed request is a 400 naming what
is wrong, never kserve's 500 with Python's exception text.

The body is a JSON header of ``Inference-Header-Content-Length`` bytes, then the tensors whose
``parameters.binary_data_size`` is set, in the order of ``inputs``; a BYTES tensor's data is its elements,
each a 4-byte little-endian length and that many bytes (the KServe / Triton protocol extension).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson

__all__ = ["HEADER", "binary_request_error"]

HEADER = b"inference-header-content-length"
ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
              "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def binary_request_error(body: bytes, declared: bytes) -> str | None:
    """Why ``body`` is not a well-formed binary-extension request (``declared``: the header's value), or None."""
    text = declared.decode("latin-1").strip()
    if not text.isdigit():
        return f"inference-header-content-length: {text[:40]!r} is not a byte count"
    start = int(text)
    if start > len(body):
        return f"inference-header-content-length: {start} exceeds the body's {len(body)} bytes"
    try:
        header = orjson.loads(body[:start])
    except orjson.JSONDecodeError:
        return f"inference-header-content-length: the first {start} bytes are not a JSON request"
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        return "inputs: a list of tensors is required"
    offset = start
    for i, tensor in enumerate(header["inputs"]):
        if not isinstance(tensor, dict):
            return f"inputs[{i}]: a tensor object is required"
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            return f"inputs[{i}].parameters: an object is required"
        size = params.get("binary_data_size")
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return f"inputs[{i}].parameters.binary_data_size: {str(size)[:40]!r} is not a byte count"
        if size > len(body) - offset:
            return (f"inputs[{i}].parameters.binary_data_size: {size} bytes, but {len(body) - offset} are left in "
                    "the body")
        problem = _tensor_error(tensor, body[offset:offset + size])
        if problem:
            return f"inputs[{i}]{problem}"
        offset += size
    if offset != len(body):
        return (f"body: {len(body) - offset} bytes follow the last binary tensor (the binary_data_size values sum "
                f"to {offset - start})")
    return None


def _tensor_error(tensor: dict[str, Any], data: bytes) -> str | None:
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        return ".shape: a list of non-negative integers is required"
    count = math.prod(shape)
    if datatype == "BYTES":
        pos, seen = 0, 0
        while pos < len(data):
            if pos + 4 > len(data):
                return f": BYTES element {seen} has a truncated length prefix"
            (length,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if length > len(data) - pos:
                return f": BYTES element {seen} declares {length} bytes, {len(data) - pos} are left"
            pos += length
            seen += 1
        return None if seen == count else f": {seen} BYTES elements for shape {shape} ({count})"
    if datatype not in ITEM_BYTES:
        return f".datatype: {str(datatype)[:40]!r} is not a V2 datatype"
    if len(data) != count * ITEM_BYTES[datatype]:
        return (f".parameters.binary_data_size: {len(data)} bytes for shape {shape} of {datatype} "
                f"({count * ITEM_BYTES[datatype]} expected)")
    return None
