"""The reference side of the differential test: the document of `gguf-inspect --json --full`,
made by the reference reader (PyPI `gguf`, gguf-py) from the same file.

usage: reference.py FILE  -> JSON on stdout
"""
import json
import math
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

NAMES = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "str",
    GGUFValueType.ARRAY: "arr", GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def scalar(value, vtype):
    if vtype == GGUFValueType.STRING:
        return bytes(value).decode("utf-8")
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if vtype == GGUFValueType.BOOL:
        return bool(value)
    return int(value)


def field_doc(field):
    vtype = field.types[0]
    if vtype == GGUFValueType.ARRAY:
        # The element type as stored (gguf-py leaves it out of `types` for an empty array).
        elem = GGUFValueType(int(field.parts[3][0]))
        items = [scalar(field.parts[i][0] if elem != GGUFValueType.STRING else field.parts[i], elem)
                 for i in field.data]
        return {"type": "arr", "elem": NAMES[elem], "len": len(field.data), "value": items}
    part = field.parts[field.data[0]]
    value = part if vtype == GGUFValueType.STRING else part[0]
    return {"type": NAMES[vtype], "value": scalar(value, vtype)}


def main(path):
    reader = GGUFReader(path)
    version = int(reader.fields["GGUF.version"].parts[-1][0])
    kv = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        kv[name] = field_doc(field)
    tensors = []
    for t in reader.tensors:
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.field.parts[3]],
            "offset": int(t.field.parts[-1][0]),
            "bytes": int(t.n_bytes),
        })
    doc = {
        "version": version,
        "byte_order": "big" if reader.byte_order == "S" else "little",
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "kv": kv,
        "tensors": tensors,
    }
    json.dump(doc, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
