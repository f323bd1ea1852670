//! The stable JSON document of `gguf-inspect --json` (schema: docs/gguf.md).

use cortex_gguf::{ByteOrder, Gguf, Value};
use serde_json::{Map, Value as Json, json};

/// How many array items are shown without `--full`.
pub(crate) const SHORT_ARRAY_ITEMS: u64 = 8;

/// The document for `gguf`; with `full`, every array element.
pub(crate) fn document(gguf: &Gguf<'_>, full: bool) -> Result<Json, cortex_gguf::Error> {
    let mut kv = Map::new();
    for entry in gguf.kvs() {
        kv.insert(entry.key.to_owned(), typed(&entry.value, full)?);
    }
    let tensors = gguf
        .tensors()
        .map(|t| {
            Ok(json!({
                "name": t.name(),
                "type": t.ggml_type().name().map_or_else(|| Json::from(t.ggml_type().0), Json::from),
                "dims": t.dims(),
                "offset": t.offset(),
                "bytes": t.bytes()?,
            }))
        })
        .collect::<Result<Vec<_>, cortex_gguf::Error>>()?;
    Ok(json!({
        "version": gguf.version(),
        "byte_order": match gguf.byte_order() {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        },
        "alignment": gguf.alignment(),
        "data_offset": gguf.data_offset(),
        "kv": kv,
        "tensors": tensors,
    }))
}

/// `{"type": .., "value": ..}`; arrays add `"elem"` and `"len"`, and hold their first items
/// unless `full`.
fn typed(value: &Value<'_>, full: bool) -> Result<Json, cortex_gguf::Error> {
    Ok(match value {
        Value::Array(a) => {
            let take = if full {
                a.len()
            } else {
                a.len().min(SHORT_ARRAY_ITEMS)
            };
            let items = a
                .iter()
                .take(usize::try_from(take).unwrap_or(usize::MAX))
                .map(|v| v.map(|v| scalar(&v)))
                .collect::<Result<Vec<_>, _>>()?;
            json!({"type": "arr", "elem": a.elem_type().name(), "len": a.len(), "value": items})
        }
        other => json!({"type": other.value_type().name(), "value": scalar(other)}),
    })
}

fn scalar(value: &Value<'_>) -> Json {
    match *value {
        Value::U8(v) => v.into(),
        Value::I8(v) => v.into(),
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => v.into(),
        Value::I64(v) => v.into(),
        // Widened exactly, so the shortest decimal is the same in every language.
        Value::F32(v) => float(f64::from(v)),
        Value::F64(v) => float(v),
        Value::Bool(v) => v.into(),
        Value::String(v) => v.into(),
        // Arrays of arrays are refused by the parser; other variants may come with new formats.
        _ => Json::Null,
    }
}

/// JSON has no NaN or infinities: those are written as the strings `NaN`, `inf`, `-inf`.
fn float(v: f64) -> Json {
    if v.is_finite() {
        v.into()
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}
