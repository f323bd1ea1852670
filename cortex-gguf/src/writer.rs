//! [`GgufBuilder`]: writes GGUF files, for tests, fuzz seeds and synthetic benchmarks.
//!
//! The layout is llama.cpp's: header, key-value pairs, tensor infos, padding to the alignment,
//! then each tensor's data (zeros) at the previous end rounded up to the alignment. Anything can be
//! written, including what the reader refuses (a `general.alignment` of the wrong type, say), so
//! tests can build malformed files from valid ones.

use std::io::{self, Write};

use crate::cursor::align_up;
use crate::{ByteOrder, DEFAULT_ALIGNMENT, Error, GgmlType, Value, ValueType};

/// A metadata value that owns its data: what the builder writes, and what
/// [`Value::to_owned_value`] returns.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OwnedValue {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `f32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// `str`
    String(String),
    /// `arr`: the element type and the elements (all of that type).
    Array(ValueType, Vec<OwnedValue>),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f64`
    F64(f64),
}

// === impl OwnedValue ===

impl OwnedValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(..) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// An array of strings.
    pub fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        Self::Array(
            ValueType::String,
            items.into_iter().map(|s| Self::String(s.into())).collect(),
        )
    }

    /// An array of `items`, all of type `elem`.
    pub fn array(elem: ValueType, items: Vec<OwnedValue>) -> Self {
        Self::Array(elem, items)
    }
}

macro_rules! owned_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for OwnedValue {
            fn from(v: $t) -> Self {
                Self::$v(v)
            }
        }
    )*};
}
owned_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for OwnedValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl Value<'_> {
    /// A copy that owns its data; arrays are read in full.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUtf8`] for a string element that is not UTF-8.
    pub fn to_owned_value(&self) -> Result<OwnedValue, Error> {
        Ok(match self {
            Value::U8(v) => OwnedValue::U8(*v),
            Value::I8(v) => OwnedValue::I8(*v),
            Value::U16(v) => OwnedValue::U16(*v),
            Value::I16(v) => OwnedValue::I16(*v),
            Value::U32(v) => OwnedValue::U32(*v),
            Value::I32(v) => OwnedValue::I32(*v),
            Value::F32(v) => OwnedValue::F32(*v),
            Value::Bool(v) => OwnedValue::Bool(*v),
            Value::String(v) => OwnedValue::String((*v).to_owned()),
            Value::Array(a) => OwnedValue::Array(
                a.elem_type(),
                a.iter()
                    .map(|v| v.and_then(|v| v.to_owned_value()))
                    .collect::<Result<_, _>>()?,
            ),
            Value::U64(v) => OwnedValue::U64(*v),
            Value::I64(v) => OwnedValue::I64(*v),
            Value::F64(v) => OwnedValue::F64(*v),
        })
    }
}

/// One tensor to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: Option<u64>,
}

/// Writes a GGUF file in llama.cpp's layout: header, key-value pairs, tensor infos, padding to the
/// alignment, then each tensor's data (zeros) at the previous end rounded up to the alignment.
/// Anything can be written, including what the reader refuses (a `general.alignment` of the wrong
/// type, say), so tests can build malformed files from valid ones.
///
/// ```
/// use cortex_gguf::{ByteOrder, Gguf, GgufBuilder, GgmlType, OwnedValue};
///
/// let bytes = GgufBuilder::new()
///     .byte_order(ByteOrder::Big)
///     .kv("general.architecture", "llama")
///     .kv("tokenizer.ggml.tokens", OwnedValue::strings(["<s>", "</s>"]))
///     .tensor("output.weight", [64, 2], GgmlType::F16)
///     .build();
/// let gguf = Gguf::parse(&bytes)?;
/// assert_eq!(gguf.byte_order(), ByteOrder::Big);
/// assert_eq!(gguf.tensor("output.weight").unwrap().bytes()?, 256);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct GgufBuilder {
    version: u32,
    byte_order: ByteOrder,
    kvs: Vec<(String, OwnedValue)>,
    tensors: Vec<TensorSpec>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

// === impl GgufBuilder ===

impl GgufBuilder {
    /// An empty little-endian GGUF v3 file.
    pub fn new() -> Self {
        Self {
            version: 3,
            byte_order: ByteOrder::Little,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Writes this version (1, 2 or 3; other numbers are written as given). Version 1 writes
    /// 32-bit counts, lengths and dimensions.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Writes in this byte order.
    pub fn byte_order(mut self, byte_order: ByteOrder) -> Self {
        self.byte_order = byte_order;
        self
    }

    /// Adds a key-value pair (in order; keys are not checked).
    pub fn kv(mut self, key: impl Into<String>, value: impl Into<OwnedValue>) -> Self {
        self.kvs.push((key.into(), value.into()));
        self
    }

    /// Adds `general.alignment` as a `u32`; tensor data is laid out with it.
    pub fn alignment(self, alignment: u32) -> Self {
        self.kv("general.alignment", alignment)
    }

    /// Adds a tensor, laid out after the previous one as llama.cpp does.
    pub fn tensor(
        mut self,
        name: impl Into<String>,
        dims: impl IntoIterator<Item = u64>,
        ty: GgmlType,
    ) -> Self {
        self.tensors.push(TensorSpec {
            name: name.into(),
            dims: dims.into_iter().collect(),
            type_id: ty.0,
            offset: None,
        });
        self
    }

    /// Adds a tensor with a raw type id and, when given, an explicit data offset (which may be
    /// wrong, for tests).
    pub fn raw_tensor(
        mut self,
        name: impl Into<String>,
        dims: impl IntoIterator<Item = u64>,
        type_id: u32,
        offset: Option<u64>,
    ) -> Self {
        self.tensors.push(TensorSpec {
            name: name.into(),
            dims: dims.into_iter().collect(),
            type_id,
            offset,
        });
        self
    }

    /// The alignment the layout uses: a valid `general.alignment`, or 32.
    fn layout_alignment(&self) -> u64 {
        self.kvs
            .iter()
            .find_map(|(k, v)| match v {
                OwnedValue::U32(a) if k == "general.alignment" && a.is_power_of_two() => {
                    Some(u64::from(*a))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The data offsets llama.cpp would give, and the size of the data section.
    fn layout(&self) -> (Vec<u64>, u64) {
        let align = self.layout_alignment();
        let mut next = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let elements = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let size = elements
                .and_then(|e| GgmlType(t.type_id).bytes_for(e))
                .unwrap_or(0);
            let offset = t.offset.unwrap_or(next);
            offsets.push(offset);
            next = offset
                .checked_add(size)
                .and_then(|e| align_up(e, align))
                .unwrap_or(u64::MAX);
        }
        (offsets, next)
    }

    /// The complete file: header, then zeroed tensor data.
    ///
    /// # Panics
    ///
    /// When the file would not fit in memory; write large files with
    /// [`write_header`](Self::write_header) and a sparse `set_len`.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let total = self
            .write_header(&mut out)
            .expect("writing to a Vec cannot fail");
        out.resize(usize::try_from(total).expect("the file fits in memory"), 0);
        out
    }

    /// Writes the header, padded to the start of the data section, and returns the length the
    /// whole file must have (the caller adds the data, or sets the length of a sparse file).
    ///
    /// # Errors
    ///
    /// Errors of `w`.
    pub fn write_header(&self, w: &mut impl Write) -> io::Result<u64> {
        let mut buf = Vec::new();
        buf.extend_from_slice(b"GGUF");
        self.u32(&mut buf, self.version);
        self.size(&mut buf, self.tensors.len() as u64);
        self.size(&mut buf, self.kvs.len() as u64);
        for (key, value) in &self.kvs {
            self.string(&mut buf, key);
            self.u32(&mut buf, value.value_type().id());
            self.value(&mut buf, value);
        }
        let (offsets, data_size) = self.layout();
        for (t, offset) in self.tensors.iter().zip(offsets) {
            self.string(&mut buf, &t.name);
            self.u32(&mut buf, u32::try_from(t.dims.len()).unwrap_or(u32::MAX));
            for &d in &t.dims {
                self.size(&mut buf, d);
            }
            self.u32(&mut buf, t.type_id);
            self.u64(&mut buf, offset);
        }
        let data_offset = align_up(buf.len() as u64, self.layout_alignment()).unwrap_or(u64::MAX);
        buf.resize(usize::try_from(data_offset).unwrap_or(buf.len()), 0);
        w.write_all(&buf)?;
        Ok(data_offset.saturating_add(data_size))
    }

    fn u32(&self, buf: &mut Vec<u8>, v: u32) {
        buf.extend_from_slice(&match self.byte_order {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        });
    }

    fn u64(&self, buf: &mut Vec<u8>, v: u64) {
        buf.extend_from_slice(&match self.byte_order {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        });
    }

    fn u16(&self, buf: &mut Vec<u8>, v: u16) {
        buf.extend_from_slice(&match self.byte_order {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        });
    }

    fn size(&self, buf: &mut Vec<u8>, v: u64) {
        if self.version == 1 {
            self.u32(buf, u32::try_from(v).unwrap_or(u32::MAX));
        } else {
            self.u64(buf, v);
        }
    }

    fn string(&self, buf: &mut Vec<u8>, s: &str) {
        self.size(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }

    fn value(&self, buf: &mut Vec<u8>, v: &OwnedValue) {
        match v {
            OwnedValue::U8(x) => buf.push(*x),
            OwnedValue::I8(x) => buf.extend_from_slice(&x.to_ne_bytes()),
            OwnedValue::U16(x) => self.u16(buf, *x),
            OwnedValue::I16(x) => self.u16(buf, u16::from_ne_bytes(x.to_ne_bytes())),
            OwnedValue::U32(x) => self.u32(buf, *x),
            OwnedValue::I32(x) => self.u32(buf, u32::from_ne_bytes(x.to_ne_bytes())),
            OwnedValue::F32(x) => self.u32(buf, x.to_bits()),
            OwnedValue::Bool(x) => buf.push(u8::from(*x)),
            OwnedValue::String(s) => self.string(buf, s),
            OwnedValue::U64(x) => self.u64(buf, *x),
            OwnedValue::I64(x) => self.u64(buf, u64::from_ne_bytes(x.to_ne_bytes())),
            OwnedValue::F64(x) => self.u64(buf, x.to_bits()),
            OwnedValue::Array(elem, items) => {
                self.u32(buf, elem.id());
                self.size(buf, items.len() as u64);
                for item in items {
                    self.value(buf, item);
                }
            }
        }
    }
}
