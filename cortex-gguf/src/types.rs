//! The ggml tensor type table and the GGUF metadata value types.
//!
//! The table is `testdata/ggml-types.tsv` (compiled from `ggml-common.h` of the pinned
//! llama.cpp build) written out as Rust; a test reads the TSV and checks every row.

use std::fmt;

/// A ggml tensor type: its id, name and block layout.
///
/// Unknown ids are representable (a file may come from a newer llama.cpp), but have no size:
/// [`block`](Self::block) returns `None`, and anything that needs a size reports
/// [`Error::UnknownTensorType`](crate::Error::UnknownTensorType).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// The block layout of a ggml type: `elements` values are stored in `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// The type's name as ggml spells it (`Q4_K`, `BF16`).
    pub name: &'static str,
    /// Values per block.
    pub elements: u64,
    /// Bytes per block.
    pub bytes: u64,
}

/// `(id, name, elements per block, bytes per block)`, from `facts/ggml-types.tsv`.
const TABLE: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

// === impl GgmlType ===

impl GgmlType {
    /// `F32`.
    pub const F32: Self = Self(0);
    /// `F16`.
    pub const F16: Self = Self(1);
    /// `Q8_0`.
    pub const Q8_0: Self = Self(8);
    /// `Q4_K`.
    pub const Q4_K: Self = Self(12);
    /// `BF16`.
    pub const BF16: Self = Self(30);

    /// The block layout, or `None` for an id the pinned ggml does not know.
    pub fn block(self) -> Option<BlockLayout> {
        TABLE
            .iter()
            .find(|(id, ..)| *id == self.0)
            .map(|&(_, name, elements, bytes)| BlockLayout {
                name,
                elements,
                bytes,
            })
    }

    /// The name as ggml spells it, or `None` for an unknown id.
    pub fn name(self) -> Option<&'static str> {
        self.block().map(|b| b.name)
    }

    /// A type by its ggml name, ignoring ASCII case (`q4_k` as llama.cpp prints it).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|(_, n, ..)| n.eq_ignore_ascii_case(name))
            .map(|&(id, ..)| Self(id))
    }

    /// Every type the pinned ggml knows, by id.
    pub fn all() -> impl Iterator<Item = Self> {
        TABLE.iter().map(|&(id, ..)| Self(id))
    }

    /// Bytes taken by `elements` values of this type; `None` for an unknown type, a count that is
    /// not a whole number of blocks, or an overflow.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let block = self.block()?;
        if elements.checked_rem(block.elements)? != 0 {
            return None;
        }
        elements
            .checked_div(block.elements)?
            .checked_mul(block.bytes)
    }
}

impl fmt::Debug for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "GgmlType({})", self.0),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown type {}", self.0),
        }
    }
}

/// The type of a GGUF metadata value: the 13 types of the GGUF specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `uint8`
    U8,
    /// `int8`
    I8,
    /// `uint16`
    U16,
    /// `int16`
    I16,
    /// `uint32`
    U32,
    /// `int32`
    I32,
    /// `float32`
    F32,
    /// `bool` (one byte, 0 or 1)
    Bool,
    /// a length-prefixed UTF-8 string
    String,
    /// a typed, length-prefixed array
    Array,
    /// `uint64` (GGUF v2 and later)
    U64,
    /// `int64` (GGUF v2 and later)
    I64,
    /// `float64` (GGUF v2 and later)
    F64,
}

// === impl ValueType ===

impl ValueType {
    /// The type for its id in the file.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The type's id in the file.
    pub fn id(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    /// The size of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }

    /// The name llama.cpp and the GGUF specification use (`u32`, `str`, `arr`).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::Bool => "bool",
            Self::String => "str",
            Self::Array => "arr",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_type_ids_round_trip() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert!(ValueType::from_id(13).is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None, "not whole blocks");
        assert_eq!(GgmlType(99).bytes_for(1), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None, "overflow");
        assert_eq!(GgmlType::from_name("q4_k"), Some(GgmlType::Q4_K));
        assert_eq!(GgmlType(99).to_string(), "unknown type 99");
    }
}
