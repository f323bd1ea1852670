//! [`Gguf`]: a parsed GGUF header borrowing from the input bytes.

use std::borrow::Cow;
use std::fmt;

use crate::cursor::{Cursor, align_up, utf8};
use crate::{Counted, Error, GgmlType, ValueType};

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The longest string llama.cpp reads (`GGUF_MAX_STRING_LENGTH`, 1 GiB).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// The most array elements llama.cpp reads (`GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// The longest tensor name ggml accepts, in bytes (`GGML_MAX_NAME - 1`).
pub const MAX_TENSOR_NAME: u64 = 63;
/// The most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// The byte order of a GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Little-endian: every file llama.cpp writes on common hardware.
    Little,
    /// Big-endian: detected, as the reference reader does, by a version whose low 16 bits are 0
    /// when read little-endian.
    Big,
}

/// The parsed header of a GGUF file: version, metadata and tensor infos, borrowing from the bytes.
///
/// Parsing validates everything (see [`parse`](Self::parse)); afterwards every accessor is a
/// bounds-checked read of already-validated bytes. The index kept is one offset per key-value pair
/// and per tensor, so memory never exceeds the input's size, whatever the counts in the file claim.
///
/// ```
/// use cortex_gguf::{Gguf, GgufBuilder, GgmlType, Value};
///
/// let bytes = GgufBuilder::new()
///     .kv("general.architecture", "llama")
///     .kv("llama.block_count", 32u32)
///     .tensor("token_embd.weight", [4096, 32000], GgmlType::Q4_K)
///     .build();
/// let gguf = Gguf::parse(&bytes)?;
/// assert_eq!(gguf.version(), 3);
/// assert_eq!(gguf.get::<&str>("general.architecture")?, "llama");
/// assert_eq!(gguf.arch_get::<u32>("block_count")?, 32);
/// let t = gguf.tensor("token_embd.weight").unwrap();
/// assert_eq!(t.dims(), &[4096, 32000]);
/// assert_eq!(t.bytes()?, 4096 * 32000 / 256 * 144);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Gguf<'a> {
    data: &'a [u8],
    header: Cow<'a, Header>,
}

/// What parsing found, as offsets into the bytes: lifetime-free, so that a memory-mapped file can
/// own it beside its map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    version: u32,
    byte_order: ByteOrder,
    alignment: u64,
    data_offset: u64,
    /// Offset of each key-value record (at its key's length), in file order.
    kvs: Vec<u64>,
    /// Positions in `kvs`, sorted by key.
    kv_index: Vec<u32>,
    /// Offset of each tensor-info record (at its name's length), in file order.
    tensors: Vec<u64>,
    /// Positions in `tensors`, sorted by name.
    tensor_index: Vec<u32>,
}

// === impl Gguf ===

impl<'a> Gguf<'a> {
    /// Parses and validates a GGUF header from the start of `data`, which must hold the whole file
    /// (its tensor data is checked to lie inside it).
    ///
    /// Validation is at least as strict as llama.cpp's `gguf.cpp`: magic, version (1 to 3), counts
    /// that the input can hold, value types, no arrays of arrays, no empty or duplicate keys,
    /// strings inside the input, `general.alignment` a `u32` power of two, tensor names at most 63
    /// bytes and unique, at most 4 dimensions, none negative, element counts and byte sizes within
    /// 64 bits, a known type whose block size divides the first dimension, data offsets in order
    /// and aligned exactly as llama.cpp lays them out, and data inside the input.
    ///
    /// # Errors
    ///
    /// The first [`Error`] found, naming its byte offset.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let header = Header::parse(data)?;
        Ok(Self {
            data,
            header: Cow::Owned(header),
        })
    }

    pub(crate) fn from_parts(data: &'a [u8], header: &'a Header) -> Self {
        Self {
            data,
            header: Cow::Borrowed(header),
        }
    }

    #[cfg(feature = "mmap")]
    pub(crate) fn into_header(self) -> Header {
        self.header.into_owned()
    }

    /// The bytes this header was parsed from.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The format version: 1, 2 or 3.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The file's byte order.
    pub fn byte_order(&self) -> ByteOrder {
        self.header.byte_order
    }

    /// The alignment of tensor data: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Where the tensor data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// How many metadata key-value pairs there are.
    pub fn kv_count(&self) -> usize {
        self.header.kvs.len()
    }

    /// How many tensors there are.
    pub fn tensor_count(&self) -> usize {
        self.header.tensors.len()
    }

    /// Every key-value pair, in file order.
    pub fn kvs(&self) -> impl ExactSizeIterator<Item = Kv<'a>> + '_ {
        self.header.kvs.iter().map(|&at| self.kv_at(at))
    }

    /// The value of `key`.
    pub fn value(&self, key: &str) -> Option<Value<'a>> {
        let pos = self
            .header
            .kv_index
            .binary_search_by(|&i| self.kv_key(i).cmp(key))
            .ok()?;
        let i = *self.header.kv_index.get(pos)?;
        Some(self.kv_at(*self.header.kvs.get(i as usize)?).value)
    }

    /// The value of `key` as `T`. Integer types convert into each other when the value fits.
    ///
    /// # Errors
    ///
    /// [`GetError::Missing`] when the key is absent, [`GetError::WrongType`] when the value is of
    /// another type (or out of `T`'s range).
    pub fn get<T: FromValue<'a>>(&self, key: &str) -> Result<T, GetError> {
        let value = self.value(key).ok_or_else(|| GetError::Missing {
            key: key.to_owned(),
        })?;
        T::from_value(&value).ok_or_else(|| GetError::WrongType {
            key: key.to_owned(),
            expected: T::EXPECTED,
            found: value.to_string_short(),
        })
    }

    /// The architecture (`general.architecture`), when present and a string.
    pub fn architecture(&self) -> Option<&'a str> {
        self.get::<&str>("general.architecture").ok()
    }

    /// The value of `"<architecture>.<key>"`, as `get` does: `arch_get("block_count")` reads
    /// `llama.block_count` in a llama file.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); [`GetError::Missing`] also when the architecture is unknown.
    pub fn arch_get<T: FromValue<'a>>(&self, key: &str) -> Result<T, GetError> {
        let arch = self.architecture().ok_or_else(|| GetError::Missing {
            key: "general.architecture".to_owned(),
        })?;
        self.get(&format!("{arch}.{key}"))
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorInfo<'a>> + '_ {
        self.header.tensors.iter().map(|&at| self.tensor_at(at))
    }

    /// Every tensor, in file order, consuming this view (which is cheap for the view of a
    /// [`GgufFile`](crate::GgufFile)).
    pub fn into_tensors(self) -> impl ExactSizeIterator<Item = TensorInfo<'a>> {
        (0..self.header.tensors.len()).map(move |i| {
            let at = self.header.tensors.get(i).copied().unwrap_or(u64::MAX);
            self.tensor_at(at)
        })
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo<'a>> {
        let pos = self
            .header
            .tensor_index
            .binary_search_by(|&i| self.tensor_name(i).cmp(name))
            .ok()?;
        let i = *self.header.tensor_index.get(pos)?;
        Some(self.tensor_at(*self.header.tensors.get(i as usize)?))
    }

    fn cursor(&self, at: u64) -> Cursor<'a> {
        Cursor::new(
            self.data,
            usize::try_from(at).unwrap_or(usize::MAX),
            self.header.byte_order == ByteOrder::Big,
            self.header.version == 1,
        )
    }

    /// The key-value record at `at`, validated by `parse`: decoding cannot fail.
    fn kv_at(&self, at: u64) -> Kv<'a> {
        let mut c = self.cursor(at);
        read_kv(&mut c).unwrap_or(Kv {
            key: "",
            offset: at,
            value: Value::U8(0),
            type_offset: at,
        })
    }

    fn kv_key(&self, i: u32) -> &'a str {
        let at = self.header.kvs.get(i as usize).copied().unwrap_or(u64::MAX);
        self.cursor(at).string().map_or("", |(_, s)| s)
    }

    fn tensor_at(&self, at: u64) -> TensorInfo<'a> {
        let mut c = self.cursor(at);
        read_tensor(&mut c).unwrap_or(TensorInfo {
            name: "",
            dims: [0; 4],
            n_dims: 0,
            ggml_type: GgmlType(u32::MAX),
            offset: 0,
            info_offset: at,
            type_offset: at,
        })
    }

    fn tensor_name(&self, i: u32) -> &'a str {
        let at = self
            .header
            .tensors
            .get(i as usize)
            .copied()
            .unwrap_or(u64::MAX);
        self.cursor(at).string().map_or("", |(_, s)| s)
    }

    /// The bytes of a tensor's data.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTensorType`] or [`Error::SizeOverflow`] when its size cannot be computed
    /// (neither happens for a tensor of a parsed file).
    pub fn tensor_data(&self, tensor: &TensorInfo<'_>) -> Result<&'a [u8], Error> {
        let size = tensor.bytes()?;
        let start = self
            .data_offset()
            .checked_add(tensor.offset)
            .ok_or(Error::SizeOverflow {
                offset: tensor.info_offset,
            })?;
        let mut c = self.cursor(start);
        c.take(size)
    }
}

impl fmt::Debug for Gguf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version())
            .field("byte_order", &self.byte_order())
            .field("alignment", &self.alignment())
            .field("data_offset", &self.data_offset())
            .field("kvs", &self.kv_count())
            .field("tensors", &self.tensor_count())
            .finish()
    }
}

// === impl Header ===

/// The least bytes one key-value record takes: key length, a one-byte key, type, a one-byte value.
fn min_kv_size(v1: bool) -> u64 {
    if v1 { 4 + 1 + 4 + 1 } else { 8 + 1 + 4 + 1 }
}

/// The least bytes one tensor-info record takes: name length, empty name, no dims, type, offset.
fn min_tensor_size(v1: bool) -> u64 {
    if v1 { 4 + 4 + 4 + 8 } else { 8 + 4 + 4 + 8 }
}

impl Header {
    pub(crate) fn parse(data: &[u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(data, 0, false, false);
        let magic = c.take(4)?;
        if magic != b"GGUF" {
            let mut found = [0; 4];
            found.copy_from_slice(magic);
            return Err(Error::BadMagic {
                found: u32::from_le_bytes(found),
            });
        }
        // As gguf-py: a version whose low half is zero read little-endian is a big-endian file.
        let raw = c.u32()?;
        let (version, byte_order) = if raw.trailing_zeros() >= 16 {
            (raw.swap_bytes(), ByteOrder::Big)
        } else {
            (raw, ByteOrder::Little)
        };
        if !(1..=3).contains(&version) {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let v1 = version == 1;
        c.big_endian = byte_order == ByteOrder::Big;
        c.v1 = v1;

        let n_tensors = c.count(Counted::Tensors, min_tensor_size(v1))?;
        let n_kv = c.count(Counted::KeyValues, min_kv_size(v1))?;

        // Counts are checked against the input: each record is larger than the u64 kept for it.
        let mut kvs = Vec::with_capacity(usize::try_from(n_kv).unwrap_or(0));
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let at = c.offset();
            let kv = read_kv(&mut c)?;
            if kv.key.is_empty() {
                return Err(Error::EmptyKey { offset: at });
            }
            if kv.key == "general.alignment" {
                alignment = match &kv.value {
                    &Value::U32(a) if a != 0 && a.is_power_of_two() => u64::from(a),
                    &Value::U32(a) => {
                        return Err(Error::BadAlignment {
                            offset: kv.value_offset(),
                            found: u64::from(a),
                        });
                    }
                    other => {
                        return Err(Error::AlignmentType {
                            offset: kv.type_offset(),
                            found: other.value_type(),
                        });
                    }
                };
            }
            kvs.push(at);
        }
        let kv_index = sorted_index(data, &kvs, byte_order, v1, |first, second| {
            Error::DuplicateKey {
                offset: second,
                first,
            }
        })?;

        let mut tensors = Vec::with_capacity(usize::try_from(n_tensors).unwrap_or(0));
        for _ in 0..n_tensors {
            let at = c.offset();
            read_tensor(&mut c)?;
            tensors.push(at);
        }
        let tensor_index = sorted_index(data, &tensors, byte_order, v1, |first, second| {
            Error::DuplicateTensor {
                offset: second,
                first,
            }
        })?;

        let data_offset =
            align_up(c.offset(), alignment).ok_or(Error::SizeOverflow { offset: c.offset() })?;
        let header = Self {
            version,
            byte_order,
            alignment,
            data_offset,
            kvs,
            kv_index,
            tensors,
            tensor_index,
        };
        header.check_layout(data)?;
        Ok(header)
    }

    /// Tensor data offsets as llama.cpp lays them out, and inside the file.
    fn check_layout(&self, data: &[u8]) -> Result<(), Error> {
        let gguf = Gguf::from_parts(data, self);
        let len = data.len() as u64;
        let mut expected = 0u64;
        for t in gguf.tensors() {
            let overflow = Error::SizeOverflow {
                offset: t.info_offset,
            };
            if t.offset != expected {
                return Err(Error::MisplacedTensor {
                    offset: t.offset_field(),
                    found: t.offset,
                    expected,
                });
            }
            let size = t.bytes()?;
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(size))
                .ok_or(overflow)?;
            if end > len {
                return Err(Error::DataOutOfBounds {
                    offset: t.offset_field(),
                    end,
                    len,
                });
            }
            expected = t
                .offset
                .checked_add(size)
                .and_then(|e| align_up(e, self.alignment))
                .ok_or(overflow)?;
        }
        Ok(())
    }
}

/// Positions of `records` sorted by their leading string (key or name); a repeated string is an
/// error made by `dup(first, second)` from the two records' offsets.
fn sorted_index(
    data: &[u8],
    records: &[u64],
    byte_order: ByteOrder,
    v1: bool,
    dup: impl Fn(u64, u64) -> Error,
) -> Result<Vec<u32>, Error> {
    let name = |i: u32| -> &[u8] {
        let at = records.get(i as usize).copied().unwrap_or(u64::MAX);
        let mut c = Cursor::new(
            data,
            usize::try_from(at).unwrap_or(usize::MAX),
            byte_order == ByteOrder::Big,
            v1,
        );
        c.string_bytes().map_or(&[][..], |(_, s)| s)
    };
    let count = u32::try_from(records.len()).map_err(|_| Error::SizeOverflow { offset: 0 })?;
    let mut index: Vec<u32> = (0..count).collect();
    // Stable: equal names keep file order, so the error names the first and the second.
    index.sort_by(|&a, &b| name(a).cmp(name(b)));
    for pair in index.windows(2) {
        if let [a, b] = *pair {
            if name(a) == name(b) {
                let (a, b) = (a.min(b), a.max(b));
                let at = |i: u32| records.get(i as usize).copied().unwrap_or(0);
                return Err(dup(at(a), at(b)));
            }
        }
    }
    Ok(index)
}

/// One key-value record: key, type, value.
fn read_kv<'a>(c: &mut Cursor<'a>) -> Result<Kv<'a>, Error> {
    let at = c.offset();
    let (_, key) = c.string()?;
    let type_at = c.offset();
    let id = c.u32()?;
    let ty = ValueType::from_id(id).ok_or(Error::UnknownValueType {
        offset: type_at,
        found: id,
    })?;
    let value = read_value(c, ty)?;
    Ok(Kv {
        key,
        offset: at,
        value,
        type_offset: type_at,
    })
}

fn read_value<'a>(c: &mut Cursor<'a>, ty: ValueType) -> Result<Value<'a>, Error> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8()?),
        ValueType::I8 => Value::I8(i8::from_ne_bytes([c.u8()?])),
        ValueType::U16 => Value::U16(c.u16()?),
        ValueType::I16 => Value::I16(i16::from_ne_bytes(c.u16()?.to_ne_bytes())),
        ValueType::U32 => Value::U32(c.u32()?),
        ValueType::I32 => Value::I32(i32::from_ne_bytes(c.u32()?.to_ne_bytes())),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32()?)),
        ValueType::Bool => Value::Bool(c.u8()? != 0),
        ValueType::U64 => Value::U64(c.u64()?),
        ValueType::I64 => Value::I64(i64::from_ne_bytes(c.u64()?.to_ne_bytes())),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64()?)),
        ValueType::String => Value::String(c.string()?.1),
        ValueType::Array => {
            let elem_at = c.offset();
            let id = c.u32()?;
            let elem = ValueType::from_id(id).ok_or(Error::UnknownValueType {
                offset: elem_at,
                found: id,
            })?;
            if elem == ValueType::Array {
                return Err(Error::NestedArray { offset: elem_at });
            }
            // Strings take at least their length field.
            let min = elem.fixed_size().unwrap_or(if c.v1 { 4 } else { 8 });
            let len_at = c.offset();
            let len = c.count(Counted::ArrayItems, min)?;
            if len > MAX_ARRAY_LEN {
                return Err(Error::TooMany {
                    offset: len_at,
                    what: Counted::ArrayItems,
                    count: len,
                });
            }
            let start = c.pos();
            match elem.fixed_size() {
                Some(size) => {
                    c.take(
                        len.checked_mul(size)
                            .ok_or(Error::SizeOverflow { offset: elem_at })?,
                    )?;
                }
                None => {
                    for _ in 0..len {
                        c.string_bytes()?;
                    }
                }
            }
            Value::Array(Array {
                elem,
                len,
                bytes: c.slice(start, c.pos()),
                offset: start as u64,
                big_endian: c.big_endian,
                v1: c.v1,
            })
        }
    })
}

fn read_tensor<'a>(c: &mut Cursor<'a>) -> Result<TensorInfo<'a>, Error> {
    let info_offset = c.offset();
    let (name_at, name) = c.string_bytes()?;
    if name.len() as u64 > MAX_TENSOR_NAME {
        return Err(Error::TensorNameTooLong {
            offset: info_offset,
            len: name.len() as u64,
        });
    }
    let name = utf8(name, name_at)?;
    let dims_at = c.offset();
    let n_dims = c.u32()?;
    if n_dims > MAX_DIMS {
        return Err(Error::TooManyDims {
            offset: dims_at,
            found: n_dims,
        });
    }
    let mut dims = [1u64; 4];
    let mut elements: u64 = 1;
    for d in dims.iter_mut().take(n_dims as usize) {
        let at = c.offset();
        let v = c.size()?;
        // ggml reads dimensions as signed 64-bit integers.
        let signed = i64::from_ne_bytes(v.to_ne_bytes());
        if signed < 0 {
            return Err(Error::NegativeDim {
                offset: at,
                found: signed,
            });
        }
        // ggml counts elements in a signed 64-bit integer.
        elements = elements
            .checked_mul(v)
            .filter(|&e| i64::try_from(e).is_ok())
            .ok_or(Error::SizeOverflow { offset: at })?;
        *d = v;
    }
    let type_at = c.offset();
    let ggml_type = GgmlType(c.u32()?);
    let block = ggml_type.block().ok_or(Error::UnknownTensorType {
        offset: type_at,
        found: ggml_type.0,
    })?;
    let first = dims.first().copied().unwrap_or(1);
    if first.checked_rem(block.elements) != Some(0) {
        return Err(Error::NotWholeBlocks {
            offset: type_at,
            elements: first,
            block: block.elements,
        });
    }
    let offset = c.u64()?;
    let info = TensorInfo {
        name,
        dims,
        n_dims,
        ggml_type,
        offset,
        info_offset,
        type_offset: type_at,
    };
    info.bytes()?;
    Ok(info)
}

/// One metadata key-value pair.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Kv<'a> {
    /// The key.
    pub key: &'a str,
    /// Where the record starts in the file.
    pub offset: u64,
    /// The value.
    pub value: Value<'a>,
    type_offset: u64,
}

impl Kv<'_> {
    /// Where the value type field is.
    pub fn type_offset(&self) -> u64 {
        self.type_offset
    }

    /// Where the value starts.
    pub fn value_offset(&self) -> u64 {
        self.type_offset.saturating_add(4)
    }
}

/// A metadata value, borrowing strings and arrays from the file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
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
    String(&'a str),
    /// `arr`, iterated lazily.
    Array(Array<'a>),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f64`
    F64(f64),
}

// === impl Value ===

impl Value<'_> {
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
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// An integer value of any width, widened; `None` for other types.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    fn to_string_short(&self) -> String {
        match self {
            Self::Array(a) => format!("arr[{},{}]", a.elem, a.len),
            other => format!("{} {other}", other.value_type()),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(v) => write!(f, "{v:?}"),
            Self::Array(a) => write!(f, "[{} x {}]", a.len, a.elem),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
        }
    }
}

/// A metadata array, decoded lazily: iterating allocates nothing.
#[derive(Clone, PartialEq)]
pub struct Array<'a> {
    elem: ValueType,
    len: u64,
    bytes: &'a [u8],
    offset: u64,
    big_endian: bool,
    v1: bool,
}

// === impl Array ===

impl<'a> Array<'a> {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    /// The number of elements.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements' bytes as stored.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }

    /// Every element; a string element that is not UTF-8 is an error.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            cursor: Cursor::new(self.bytes, 0, self.big_endian, self.v1),
            elem: self.elem,
            left: self.len,
            base: self.offset,
        }
    }

    /// Element `i`: direct for fixed-size types, a walk for strings.
    pub fn get(&self, i: u64) -> Option<Result<Value<'a>, Error>> {
        if i >= self.len {
            return None;
        }
        match self.elem.fixed_size() {
            Some(size) => {
                let at = usize::try_from(i.checked_mul(size)?).ok()?;
                let mut c = Cursor::new(self.bytes, at, self.big_endian, self.v1);
                Some(read_value(&mut c, self.elem))
            }
            None => self.iter().nth(usize::try_from(i).ok()?),
        }
    }

    /// The elements as `T`, each checked like [`Gguf::get`].
    pub fn typed<T: FromValue<'a>>(&self) -> impl Iterator<Item = Option<T>> + 'a {
        self.iter().map(|v| v.ok().and_then(|v| T::from_value(&v)))
    }
}

impl fmt::Debug for Array<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("elem", &self.elem)
            .field("len", &self.len)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<'a> IntoIterator for &Array<'a> {
    type Item = Result<Value<'a>, Error>;
    type IntoIter = ArrayIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The iterator of [`Array::iter`].
#[derive(Debug, Clone)]
pub struct ArrayIter<'a> {
    cursor: Cursor<'a>,
    elem: ValueType,
    left: u64,
    base: u64,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Result<Value<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let value = read_value(&mut self.cursor, self.elem).map_err(|e| match e {
            // Offsets inside the array become offsets in the file.
            Error::InvalidUtf8 {
                offset,
                valid_up_to,
            } => Error::InvalidUtf8 {
                offset: offset.saturating_add(self.base),
                valid_up_to,
            },
            other => other,
        });
        if value.is_err() {
            self.left = 0;
        }
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// One tensor's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    name: &'a str,
    dims: [u64; 4],
    n_dims: u32,
    ggml_type: GgmlType,
    offset: u64,
    info_offset: u64,
    type_offset: u64,
}

// === impl TensorInfo ===

impl<'a> TensorInfo<'a> {
    /// The tensor's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Its dimensions, innermost first (ggml's `ne`).
    pub fn dims(&self) -> &[u64] {
        self.dims.get(..self.n_dims as usize).unwrap_or(&[])
    }

    /// Its ggml type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Where its data starts, from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where its description starts in the file.
    pub fn info_offset(&self) -> u64 {
        self.info_offset
    }

    /// The number of elements (1 for no dimensions).
    pub fn elements(&self) -> u64 {
        // Checked when parsed.
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// The size of its data in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTensorType`] for a type the pinned ggml does not know, and
    /// [`Error::SizeOverflow`] or [`Error::NotWholeBlocks`] when the size is not representable.
    pub fn bytes(&self) -> Result<u64, Error> {
        let type_at = self.type_field();
        let block = self.ggml_type.block().ok_or(Error::UnknownTensorType {
            offset: type_at,
            found: self.ggml_type.0,
        })?;
        let overflow = Error::SizeOverflow { offset: type_at };
        let first = self.dims.first().copied().unwrap_or(1);
        if first.checked_rem(block.elements) != Some(0) {
            return Err(Error::NotWholeBlocks {
                offset: type_at,
                elements: first,
                block: block.elements,
            });
        }
        let row = first
            .checked_div(block.elements)
            .and_then(|blocks| blocks.checked_mul(block.bytes))
            .ok_or(overflow)?;
        self.dims
            .iter()
            .skip(1)
            .try_fold(row, |acc, &d| acc.checked_mul(d))
            .ok_or(overflow)
    }

    fn type_field(&self) -> u64 {
        self.type_offset
    }

    fn offset_field(&self) -> u64 {
        self.type_field().saturating_add(4)
    }
}

/// Types [`Gguf::get`] can read a value as.
pub trait FromValue<'a>: Sized {
    /// What the type is called in errors.
    const EXPECTED: &'static str;

    /// The value as `Self`, or `None` when it is of another type or out of range.
    fn from_value(value: &Value<'a>) -> Option<Self>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl<'a> FromValue<'a> for $t {
            const EXPECTED: &'static str = stringify!($t);

            fn from_value(value: &Value<'a>) -> Option<Self> {
                value.as_i128().and_then(|v| <$t>::try_from(v).ok())
            }
        }
    )*};
}
int_from_value!(u8, i8, u16, i16, u32, i32, u64, i64, usize);

impl<'a> FromValue<'a> for f32 {
    const EXPECTED: &'static str = "f32";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        match *value {
            Value::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for f64 {
    const EXPECTED: &'static str = "f64 or f32";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        match *value {
            Value::F64(v) => Some(v),
            Value::F32(v) => Some(f64::from(v)),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for bool {
    const EXPECTED: &'static str = "bool";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        match *value {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "str";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        match *value {
            Value::String(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for Array<'a> {
    const EXPECTED: &'static str = "arr";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        match value {
            Value::Array(a) => Some(a.clone()),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for Value<'a> {
    const EXPECTED: &'static str = "any value";

    fn from_value(value: &Value<'a>) -> Option<Self> {
        Some(value.clone())
    }
}

/// Why [`Gguf::get`] found no value of the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// The key is absent.
    #[error("metadata key `{key}` is missing")]
    Missing {
        /// The key.
        key: String,
    },
    /// The value has another type, or is out of range.
    #[error("metadata key `{key}` is {found}, not {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The value found, shortened.
        found: String,
    },
}
