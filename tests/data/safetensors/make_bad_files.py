#!/usr/bin/env python3
"""Writes the safetensors test files: one malformed file per validation rule the loader enforces
(tests/nn/test_safetensors.cpp expects each to be refused with a message naming the problem), and
a few valid files with hand-encoded values. Standard library only; rerun to regenerate:

    python3 tests/data/safetensors/make_bad_files.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def raw(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def with_header(header_text, data=b"", header_length=None):
    """8-byte little-endian header length, header bytes, data section."""
    header = header_text.encode("utf-8") if isinstance(header_text, str) else header_text
    n = len(header) if header_length is None else header_length
    return struct.pack("<Q", n) + header + data


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    as_json = lambda v: list(v) if isinstance(v, tuple) else v  # non-tuples are written as they are
    return {"dtype": dtype, "shape": as_json(shape), "data_offsets": as_json(offsets)}


def file(name, header, data=b""):
    """header: a dict (dumped compactly, as the reference writer does) or literal JSON text."""
    text = header if isinstance(header, (str, bytes)) else json.dumps(header, separators=(",", ":"))
    raw(name, with_header(text, data))


EIGHT = bytes(range(8))

# --- framing -------------------------------------------------------------------------------------
raw("bad_empty.safetensors", b"")
raw("bad_too_short.safetensors", b"\x02\x00\x00\x00\x00")
raw("bad_header_too_large.safetensors", with_header(b"{}", header_length=100_000_001))
raw("bad_header_past_end.safetensors", with_header(b"{}      ", header_length=1000))

# --- header text ---------------------------------------------------------------------------------
file("bad_invalid_utf8.safetensors", b'{"a\xff":' + json.dumps(entry()).encode() + b"}", EIGHT)
file("bad_invalid_json.safetensors", '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}', EIGHT)
file("bad_not_object.safetensors", "[1, 2]")
A = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
file("bad_duplicate_tensor.safetensors", "{" + A + "," + A + "}", EIGHT)
file("bad_duplicate_field.safetensors", '{"a":{"dtype":"F32","dtype":"F64","shape":[2],"data_offsets":[0,8]}}', EIGHT)

# --- __metadata__ --------------------------------------------------------------------------------
file("bad_metadata_not_object.safetensors", {"__metadata__": "format=pt", "a": entry()}, EIGHT)
file("bad_metadata_not_strings.safetensors", {"__metadata__": {"epoch": 3}, "a": entry()}, EIGHT)

# --- one tensor entry ----------------------------------------------------------------------------
file("bad_entry_not_object.safetensors", {"a": ["F32", [2], [0, 8]]}, EIGHT)
file("bad_missing_dtype.safetensors", {"a": {"shape": [2], "data_offsets": [0, 8]}}, EIGHT)
file("bad_missing_shape.safetensors", {"a": {"dtype": "F32", "data_offsets": [0, 8]}}, EIGHT)
file("bad_missing_data_offsets.safetensors", {"a": {"dtype": "F32", "shape": [2]}}, EIGHT)
file("bad_extra_key.safetensors", {"a": dict(entry(), layout="row-major")}, EIGHT)
file("bad_dtype_not_string.safetensors", {"a": entry(dtype=4)}, EIGHT)
file("bad_unknown_dtype.safetensors", {"a": entry(dtype="F128")}, EIGHT)
file("bad_unsupported_i32.safetensors", {"a": entry(dtype="I32")}, EIGHT)
file("bad_unsupported_bool.safetensors", {"a": entry(dtype="BOOL", shape=(8,))}, EIGHT)
file("bad_unsupported_u8.safetensors", {"a": entry(dtype="U8", shape=(2, 4))}, EIGHT)
file("bad_shape_not_array.safetensors", {"a": entry(shape=2)}, EIGHT)
file("bad_shape_negative.safetensors", {"a": entry(shape=(-2,))}, EIGHT)
file("bad_shape_float.safetensors", {"a": entry(shape=(2.0,))}, EIGHT)
file("bad_shape_bool.safetensors", {"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, EIGHT)
file("bad_offsets_not_pair.safetensors", {"a": entry(offsets=(0, 8, 16))}, EIGHT)
file("bad_offsets_negative.safetensors", {"a": entry(offsets=(-8, 0))}, EIGHT)
file("bad_offsets_reversed.safetensors", {"a": entry(offsets=(8, 0))}, EIGHT)
file("bad_offsets_past_end.safetensors", {"a": entry(shape=(4,), offsets=(0, 16))}, EIGHT)
file("bad_size_mismatch.safetensors", {"a": entry(shape=(3,), offsets=(0, 8))}, EIGHT)
# 2^32 * 2^32 overflows before the trailing 0 would bring the product back to 0.
file("bad_shape_overflow.safetensors", {"a": entry(shape=(2**32, 2**32, 0), offsets=(0, 0))}, EIGHT[:0])
file("bad_bytes_overflow.safetensors", {"a": entry(shape=(2**62,), offsets=(0, 8))}, EIGHT)
file("bad_dimension_too_large.safetensors", {"a": entry(shape=(2**63, 0), offsets=(0, 0))})

# --- layout of the data section ------------------------------------------------------------------
SIXTEEN = bytes(range(16))
file("bad_gap.safetensors", {"a": entry(offsets=(0, 8)), "b": entry(shape=(1,), offsets=(12, 16))}, SIXTEEN)
file("bad_overlap.safetensors", {"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}, SIXTEEN[:12])
file("bad_trailing_bytes.safetensors", {"a": entry(offsets=(0, 8))}, SIXTEEN)
file("bad_data_before_first_tensor.safetensors", {"a": entry(offsets=(8, 16))}, SIXTEEN)

# --- valid files ---------------------------------------------------------------------------------
# F16 values encoded by Python's own IEEE half conversion (struct 'e'); BF16 as the top 16 bits of
# the float32 encoding (exact for these values). Offsets deliberately not in name order, header
# padded with spaces, a zero-size tensor, metadata.
f16_values = [1.0, -2.5, 65504.0, 2.0**-24, 2.0**-14, -0.0, float("inf")]
bf16_values = [1.0, -3.140625, 2.0**-133, 3.3895313892515355e38, float("-inf")]
f16 = b"".join(struct.pack("<e", v) for v in f16_values)
bf16 = b"".join(struct.pack("<f", v)[2:] for v in bf16_values)
f64 = struct.pack("<3d", 0.1, -1e300, 5e-324)
i64 = struct.pack("<4q", -(2**63), -1, 0, 2**63 - 1)
parts, header, offset = [], {}, 0
for name, dtype, shape, data in [("z.i64", "I64", [2, 2], i64), ("y.f64", "F64", [3], f64),
                                 ("x.empty", "F32", [0, 3], b""), ("b.bf16", "BF16", [5], bf16),
                                 ("a.f16", "F16", [7], f16)]:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
    parts.append(data)
    offset += len(data)
header["__metadata__"] = {"format": "pt", "note": "h\u00e9llo"}
text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
text += b" " * (-len(text) % 8)
raw("good_mixed.safetensors", with_header(text, b"".join(parts)))
