//! [`Error`]: what is wrong with a GGUF file, and at which byte.

use std::fmt;

use crate::ValueType;

/// Why a GGUF header was refused. Every variant names the byte offset where the problem was found
/// and the value found there; the type is `Copy` and allocation-free, so a hostile file cannot make
/// reporting its own error expensive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside a field.
    UnexpectedEof {
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    BadMagic {
        /// The bytes found, as a little-endian `u32`.
        found: u32,
    },
    /// A version this reader does not know (1, 2 and 3 are known), at offset 4.
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// A count that the rest of the input cannot possibly hold (each item takes at least one
    /// byte), refused before anything is allocated for it.
    TooMany {
        /// Where the count is.
        offset: u64,
        /// What is counted.
        what: Counted,
        /// The count found.
        count: u64,
    },
    /// A string that is not UTF-8.
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: u64,
        /// How many bytes of it are valid.
        valid_up_to: u64,
    },
    /// A metadata value type id outside the 13 the format defines.
    UnknownValueType {
        /// Where the type id is.
        offset: u64,
        /// The id found.
        found: u32,
    },
    /// An array of arrays; llama.cpp refuses them too.
    NestedArray {
        /// Where the inner element type is.
        offset: u64,
    },
    /// A metadata key of length zero.
    EmptyKey {
        /// Where the key is.
        offset: u64,
    },
    /// A metadata key given twice.
    DuplicateKey {
        /// Where the second one is.
        offset: u64,
        /// Where the first one is.
        first: u64,
    },
    /// `general.alignment` is not a `u32`.
    AlignmentType {
        /// Where its value type is.
        offset: u64,
        /// The type found.
        found: ValueType,
    },
    /// `general.alignment` is zero or not a power of two.
    BadAlignment {
        /// Where its value is.
        offset: u64,
        /// The value found.
        found: u64,
    },
    /// A tensor name longer than ggml's 63 bytes.
    TensorNameTooLong {
        /// Where the name is.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// A tensor name given twice.
    DuplicateTensor {
        /// Where the second one is.
        offset: u64,
        /// Where the first one is.
        first: u64,
    },
    /// More dimensions than ggml's 4.
    TooManyDims {
        /// Where the count is.
        offset: u64,
        /// The count found.
        found: u32,
    },
    /// A dimension that is negative as ggml's signed 64-bit sizes read it.
    NegativeDim {
        /// Where the dimension is.
        offset: u64,
        /// Its value, as ggml reads it.
        found: i64,
    },
    /// A tensor type id the pinned ggml does not know, where its size is needed.
    UnknownTensorType {
        /// Where the type id is.
        offset: u64,
        /// The id found.
        found: u32,
    },
    /// A tensor whose first dimension is not a whole number of its type's blocks.
    NotWholeBlocks {
        /// Where the tensor's type is.
        offset: u64,
        /// The first dimension.
        elements: u64,
        /// The type's block size.
        block: u64,
    },
    /// A size or offset that overflows 64 bits (or ggml's signed 64-bit element count).
    SizeOverflow {
        /// Where the value that overflowed was read.
        offset: u64,
    },
    /// A tensor's data offset is not where llama.cpp expects it: tensors are stored in order, each
    /// starting at the previous end rounded up to the alignment.
    MisplacedTensor {
        /// Where the tensor's offset field is.
        offset: u64,
        /// The data offset found.
        found: u64,
        /// The data offset expected.
        expected: u64,
    },
    /// A tensor's data extends past the end of its file.
    DataOutOfBounds {
        /// Where the tensor's offset field is.
        offset: u64,
        /// Where its data would end, from the start of the file.
        end: u64,
        /// The file's length.
        len: u64,
    },
}

/// What a [`Error::TooMany`] count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Counted {
    /// Tensor infos.
    Tensors,
    /// Metadata key-value pairs.
    KeyValues,
    /// Array elements.
    ArrayItems,
    /// String bytes.
    StringBytes,
}

// === impl Error ===

impl Error {
    /// The byte offset the error is about.
    pub fn offset(&self) -> u64 {
        match *self {
            Self::BadMagic { .. } => 0,
            Self::UnsupportedVersion { .. } => 4,
            Self::UnexpectedEof { offset, .. }
            | Self::TooMany { offset, .. }
            | Self::InvalidUtf8 { offset, .. }
            | Self::UnknownValueType { offset, .. }
            | Self::NestedArray { offset }
            | Self::EmptyKey { offset }
            | Self::DuplicateKey { offset, .. }
            | Self::AlignmentType { offset, .. }
            | Self::BadAlignment { offset, .. }
            | Self::TensorNameTooLong { offset, .. }
            | Self::DuplicateTensor { offset, .. }
            | Self::TooManyDims { offset, .. }
            | Self::NegativeDim { offset, .. }
            | Self::UnknownTensorType { offset, .. }
            | Self::NotWholeBlocks { offset, .. }
            | Self::SizeOverflow { offset }
            | Self::MisplacedTensor { offset, .. }
            | Self::DataOutOfBounds { offset, .. } => offset,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset();
        match *self {
            Self::UnexpectedEof {
                needed, available, ..
            } => write!(
                f,
                "unexpected end of input at byte {at}: {needed} bytes needed, {available} left"
            ),
            Self::BadMagic { found } => write!(
                f,
                "not a GGUF file: the first 4 bytes are {:02x?}, not \"GGUF\"",
                found.to_le_bytes()
            ),
            Self::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported GGUF version {found} at byte 4 (1, 2 and 3 are supported)"
                )
            }
            Self::TooMany { what, count, .. } => {
                let what = match what {
                    Counted::Tensors => "tensor count",
                    Counted::KeyValues => "key-value count",
                    Counted::ArrayItems => "array length",
                    Counted::StringBytes => "string length",
                };
                write!(
                    f,
                    "{what} {count} at byte {at} is larger than the rest of the file"
                )
            }
            Self::InvalidUtf8 { valid_up_to, .. } => write!(
                f,
                "string at byte {at} is not UTF-8 (invalid after {valid_up_to} bytes)"
            ),
            Self::UnknownValueType { found, .. } => {
                write!(f, "unknown metadata value type {found} at byte {at}")
            }
            Self::NestedArray { .. } => write!(
                f,
                "array of arrays at byte {at} (not supported by llama.cpp)"
            ),
            Self::EmptyKey { .. } => write!(f, "empty metadata key at byte {at}"),
            Self::DuplicateKey { first, .. } => {
                write!(
                    f,
                    "duplicate metadata key at byte {at} (first at byte {first})"
                )
            }
            Self::AlignmentType { found, .. } => write!(
                f,
                "general.alignment at byte {at} has type {found}, not u32"
            ),
            Self::BadAlignment { found, .. } => write!(
                f,
                "general.alignment {found} at byte {at} is not a power of two"
            ),
            Self::TensorNameTooLong { len, .. } => write!(
                f,
                "tensor name at byte {at} is {len} bytes long (at most 63)"
            ),
            Self::DuplicateTensor { first, .. } => {
                write!(
                    f,
                    "duplicate tensor name at byte {at} (first at byte {first})"
                )
            }
            Self::TooManyDims { found, .. } => {
                write!(f, "tensor at byte {at} has {found} dimensions (at most 4)")
            }
            Self::NegativeDim { found, .. } => {
                write!(f, "tensor dimension {found} at byte {at} is negative")
            }
            Self::UnknownTensorType { found, .. } => {
                write!(f, "unknown ggml tensor type {found} at byte {at}")
            }
            Self::NotWholeBlocks {
                elements, block, ..
            } => write!(
                f,
                "tensor at byte {at}: first dimension {elements} is not a multiple of the type's block size {block}"
            ),
            Self::SizeOverflow { .. } => write!(f, "size overflow in the value at byte {at}"),
            Self::MisplacedTensor {
                found, expected, ..
            } => write!(
                f,
                "tensor data offset {found} at byte {at} is not where it must be ({expected})"
            ),
            Self::DataOutOfBounds { end, len, .. } => write!(
                f,
                "tensor data described at byte {at} ends at byte {end}, past the end of the file ({len} bytes)"
            ),
        }
    }
}

impl std::error::Error for Error {}
