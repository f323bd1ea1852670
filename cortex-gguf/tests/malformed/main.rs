//! Every validation rule, each with a hand-made file that breaks it, and the malformed-input shapes of
//! llama.cpp's published GGUF advisories. Each must give its error, at the right byte, and never
//! panic.

// Test code: sizes are small and known, and a long test reads better as one story.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

use cortex_gguf::{
    ByteOrder, Counted, Error, GgmlType, Gguf, GgufBuilder, MAX_TENSOR_NAME, OwnedValue, Value,
    ValueType,
};

fn base() -> GgufBuilder {
    GgufBuilder::new().kv("general.architecture", "llama")
}

/// Where `needle` first occurs in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

fn err(bytes: &[u8]) -> Error {
    Gguf::parse(bytes).expect_err("must be refused")
}

#[test]
fn bad_magic() {
    let mut bytes = base().build();
    bytes[..4].copy_from_slice(b"GGML");
    assert_eq!(
        err(&bytes),
        Error::BadMagic {
            found: u32::from_le_bytes(*b"GGML")
        }
    );
    assert_eq!(
        err(&bytes).to_string(),
        "not a GGUF file: the first 4 bytes are [47, 47, 4d, 4c], not \"GGUF\""
    );
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 4, 1000] {
        let bytes = base().version(v).build();
        assert_eq!(err(&bytes), Error::UnsupportedVersion { found: v }, "v{v}");
    }
}

#[test]
fn versions_one_two_three_and_both_byte_orders_parse() {
    for version in 1..=3 {
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let bytes = base()
                .version(version)
                .byte_order(order)
                .kv("tokens", OwnedValue::strings(["a", "b"]))
                .kv("big", u64::MAX)
                .tensor("t", [32, 2], GgmlType::Q8_0)
                .build();
            let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("v{version} {order:?}: {e}"));
            assert_eq!((g.version(), g.byte_order()), (version, order));
            assert_eq!(g.get::<u64>("big").unwrap(), u64::MAX);
            assert_eq!(g.tensor("t").unwrap().dims(), &[32, 2]);
            let tokens: Vec<&str> = g
                .get::<cortex_gguf::Array<'_>>("tokens")
                .unwrap()
                .typed::<&str>()
                .flatten()
                .collect();
            assert_eq!(tokens, ["a", "b"]);
        }
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // n_tensors at byte 8, n_kv at byte 16.
    let mut bytes = base().build();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        err(&bytes),
        Error::TooMany {
            offset: 8,
            what: Counted::Tensors,
            count: u64::MAX
        }
    );
    let mut bytes = base().build();
    bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_eq!(
        err(&bytes),
        Error::TooMany {
            offset: 16,
            what: Counted::KeyValues,
            count: 1 << 40
        }
    );
}

#[test]
fn huge_string_and_array_lengths() {
    // The first key's length is at byte 24.
    let mut bytes = base().build();
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        err(&bytes),
        Error::TooMany {
            offset: 24,
            what: Counted::StringBytes,
            count: u64::MAX
        }
    );

    let bytes = base()
        .kv("arr", OwnedValue::array(ValueType::U32, vec![1u32.into()]))
        .build();
    let len_at = find(&bytes, b"arr") + 3 + 4 + 4;
    let mut patched = bytes.clone();
    patched[len_at..len_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert_eq!(
        err(&patched),
        Error::TooMany {
            offset: len_at as u64,
            what: Counted::ArrayItems,
            count: u64::MAX / 2
        }
    );
    // A string array claiming more strings than the rest could hold (each needs 8 length bytes).
    let bytes = base().kv("toks", OwnedValue::strings(["x"])).build();
    let len_at = find(&bytes, b"toks") + 4 + 4 + 4;
    let mut patched = bytes.clone();
    patched[len_at..len_at + 8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    assert!(matches!(
        err(&patched),
        Error::TooMany {
            what: Counted::ArrayItems,
            ..
        }
    ));
}

#[test]
fn invalid_utf8_in_keys_values_names_and_array_items() {
    let bytes = base().kv("k\u{7f}ey", 1u8).build();
    let at = find(&bytes, b"k\x7fey");
    let mut patched = bytes.clone();
    patched[at + 1] = 0xFF;
    assert_eq!(
        err(&patched),
        Error::InvalidUtf8 {
            offset: at as u64,
            valid_up_to: 1
        }
    );

    let bytes = base().kv("s", "va\u{7f}ue").build();
    let at = find(&bytes, b"va\x7fue");
    let mut patched = bytes.clone();
    patched[at + 2] = 0xC3;
    assert_eq!(
        err(&patched),
        Error::InvalidUtf8 {
            offset: at as u64,
            valid_up_to: 2
        }
    );

    let bytes = base().tensor("na\u{7f}e", [4], GgmlType::F32).build();
    let at = find(&bytes, b"na\x7fe");
    let mut patched = bytes.clone();
    patched[at + 2] = 0x80;
    assert!(matches!(err(&patched), Error::InvalidUtf8 { offset, .. } if offset == at as u64));

    // In a string array the error comes when the element is read, with its offset in the file.
    let bytes = base()
        .kv("toks", OwnedValue::strings(["ok", "b\u{7f}d"]))
        .build();
    let at = find(&bytes, b"b\x7fd");
    let mut patched = bytes.clone();
    patched[at + 1] = 0xFF;
    let g = Gguf::parse(&patched).unwrap();
    let items: Vec<_> = g
        .get::<cortex_gguf::Array<'_>>("toks")
        .unwrap()
        .iter()
        .collect();
    assert_eq!(items[0], Ok(Value::String("ok")));
    assert_eq!(
        items[1],
        Err(Error::InvalidUtf8 {
            offset: at as u64,
            valid_up_to: 1
        })
    );
}

#[test]
fn unknown_value_types_and_nested_arrays() {
    let bytes = base().kv("marker", 1u32).build();
    let at = find(&bytes, b"marker") + 6;
    let mut patched = bytes.clone();
    patched[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert_eq!(
        err(&patched),
        Error::UnknownValueType {
            offset: at as u64,
            found: 13
        }
    );

    let nested = OwnedValue::array(ValueType::Array, vec![OwnedValue::strings(["a"])]);
    let bytes = base().kv("nested", nested).build();
    let elem_at = find(&bytes, b"nested") + 6 + 4;
    assert_eq!(
        err(&bytes),
        Error::NestedArray {
            offset: elem_at as u64
        }
    );
}

#[test]
fn empty_and_duplicate_keys() {
    let bytes = base().kv("", 1u8).build();
    assert!(matches!(err(&bytes), Error::EmptyKey { .. }));
    let bytes = base().kv("a", 1u8).kv("b", 2u8).kv("a", 3u8).build();
    let first = find(&bytes, b"a\x00") as u64 - 8;
    let Error::DuplicateKey { offset, first: f } = err(&bytes) else {
        panic!()
    };
    assert_eq!(f, first);
    assert!(offset > first);
}

#[test]
fn alignment_rules() {
    // The wrong type (as in the advisory: a u64 alignment read as u32 by older readers).
    let bytes = base().kv("general.alignment", 64u64).build();
    assert!(matches!(
        err(&bytes),
        Error::AlignmentType {
            found: ValueType::U64,
            ..
        }
    ));
    for bad in [0u32, 3, 48, 1000] {
        let bytes = base().kv("general.alignment", bad).build();
        assert!(
            matches!(err(&bytes), Error::BadAlignment { found, .. } if found == u64::from(bad)),
            "{bad}"
        );
    }
    // A valid but huge alignment: the data section starts 2 GiB in, past the end of the input.
    // (Patched in: the writer would really pad the header to 2 GiB.)
    let mut bytes = base().alignment(64).tensor("t", [4], GgmlType::F32).build();
    let at = find(&bytes, b"general.alignment") + "general.alignment".len() + 4;
    bytes[at..at + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
    assert!(
        matches!(err(&bytes), Error::DataOutOfBounds { .. }),
        "{:?}",
        err(&bytes)
    );
    // And a valid one is honoured.
    let bytes = base()
        .alignment(64)
        .tensor("a", [4], GgmlType::F32)
        .tensor("b", [4], GgmlType::F32)
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    assert_eq!(g.tensor("b").unwrap().offset(), 64);
}

trait HeaderOnly {
    fn build_header_only(&self) -> Vec<u8>;
}

impl HeaderOnly for GgufBuilder {
    /// The header alone, without the data section the tensors need.
    fn build_header_only(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_header(&mut out).unwrap();
        out
    }
}

#[test]
fn tensor_name_rules() {
    let long = "x".repeat(MAX_TENSOR_NAME as usize + 1);
    let bytes = base().tensor(&long, [4], GgmlType::F32).build();
    assert!(matches!(
        err(&bytes),
        Error::TensorNameTooLong { len: 64, .. }
    ));
    let ok = "x".repeat(MAX_TENSOR_NAME as usize);
    assert!(Gguf::parse(&base().tensor(&ok, [4], GgmlType::F32).build()).is_ok());

    let bytes = base()
        .tensor("w", [4], GgmlType::F32)
        .tensor("w", [4], GgmlType::F32)
        .build();
    assert!(matches!(err(&bytes), Error::DuplicateTensor { .. }));
}

#[test]
fn dimension_rules() {
    let bytes = base()
        .tensor("t", [1, 1, 1, 1, 1], GgmlType::F32)
        .build_header_only();
    assert!(matches!(err(&bytes), Error::TooManyDims { found: 5, .. }));

    let bytes = base()
        .tensor("t", [4, u64::MAX], GgmlType::F32)
        .build_header_only();
    assert!(matches!(err(&bytes), Error::NegativeDim { found: -1, .. }));

    // Dims whose product overflows ggml's signed 64-bit element count.
    let bytes = base()
        .tensor("t", [1 << 32, 1 << 32], GgmlType::F32)
        .build_header_only();
    assert!(matches!(err(&bytes), Error::SizeOverflow { .. }));

    // Zero-size dims: a legal, empty tensor (llama.cpp accepts them), and no division by zero.
    let bytes = base()
        .tensor("z", [0, 5], GgmlType::F32)
        .tensor("after", [4, 0, 3], GgmlType::F16)
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.tensor("z").unwrap().bytes().unwrap(), 0);
    assert_eq!(g.tensor("after").unwrap().offset(), 0);
}

#[test]
fn type_rules() {
    for id in [4u32, 5, 31, 36, 99, u32::MAX] {
        let bytes = base().raw_tensor("t", [32], id, None).build_header_only();
        assert!(
            matches!(err(&bytes), Error::UnknownTensorType { found, .. } if found == id),
            "{id}"
        );
    }
    let bytes = base()
        .tensor("q", [100, 2], GgmlType::Q4_K)
        .build_header_only();
    assert!(matches!(
        err(&bytes),
        Error::NotWholeBlocks {
            elements: 100,
            block: 256,
            ..
        }
    ));
}

#[test]
fn offsets_must_be_in_order_aligned_and_inside_the_file() {
    // Out of order.
    let bytes = base()
        .raw_tensor("a", [8], 0, Some(32))
        .raw_tensor("b", [8], 0, Some(0))
        .build();
    assert!(matches!(
        err(&bytes),
        Error::MisplacedTensor {
            found: 32,
            expected: 0,
            ..
        }
    ));
    // Unaligned: the second tensor right after the first, without padding.
    let bytes = base()
        .raw_tensor("a", [3], 0, None)
        .raw_tensor("b", [3], 0, Some(12))
        .build();
    assert!(matches!(
        err(&bytes),
        Error::MisplacedTensor {
            found: 12,
            expected: 32,
            ..
        }
    ));
    // Data past the end of the file.
    let mut bytes = base().tensor("a", [64], GgmlType::F32).build();
    let len = bytes.len();
    bytes.truncate(len - 1);
    assert!(
        matches!(err(&bytes), Error::DataOutOfBounds { end, len: l, .. } if end == len as u64 && l == len as u64 - 1)
    );
}

#[test]
fn padding_that_would_wrap_to_zero() {
    // 2^63 - 8 F16 elements: 2^64 - 16 bytes, which padding to 32 would wrap to 0.
    let bytes = base()
        .tensor("huge", [(1u64 << 63) - 8], GgmlType::F16)
        .tensor("next", [8], GgmlType::F32)
        .build_header_only();
    assert!(
        matches!(err(&bytes), Error::SizeOverflow { .. }),
        "{:?}",
        err(&bytes)
    );
}

#[test]
fn truncation_at_every_byte_of_a_small_valid_file() {
    let bytes = base()
        .kv("u64", 7u64)
        .kv("toks", OwnedValue::strings(["<s>", "</s>", "hello"]))
        .kv(
            "scores",
            OwnedValue::array(ValueType::F32, vec![0.5f32.into(), 1.5f32.into()]),
        )
        .tensor("a", [32, 2], GgmlType::Q8_0)
        .tensor("b", [5], GgmlType::F32)
        .build();
    let g = Gguf::parse(&bytes).unwrap();
    // The builder pads after the last tensor, as gguf.cpp's writer does; cutting only padding
    // leaves a valid file.
    let needed = g
        .tensors()
        .map(|t| g.data_offset() + t.offset() + t.bytes().unwrap())
        .max()
        .unwrap();
    for len in needed as usize..bytes.len() {
        assert!(Gguf::parse(&bytes[..len]).is_ok(), "len {len}");
    }
    for len in 0..needed as usize {
        let e = Gguf::parse(&bytes[..len]).expect_err("a truncated file is refused");
        assert!(e.offset() <= len as u64, "len {len}: {e}");
        assert!(
            matches!(
                e,
                Error::UnexpectedEof { .. } | Error::DataOutOfBounds { .. } | Error::TooMany { .. }
            ),
            "len {len}: {e:?}"
        );
    }
}

#[test]
fn errors_name_the_offset_and_what_was_found() {
    // general.architecture = "llama": key length at 24, key at 32..52, type at 52, value length at 56.
    let bytes = base().build();
    assert_eq!(
        err(&bytes[..60]).to_string(),
        "unexpected end of input at byte 56: 8 bytes needed, 4 left"
    );
    assert_eq!(
        err(&bytes[..30]).to_string(),
        "key-value count 1 at byte 16 is larger than the rest of the file"
    );
}
