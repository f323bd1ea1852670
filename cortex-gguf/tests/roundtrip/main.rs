//! Property: whatever metadata and tensor infos the writer is given, the reader gives back the same
//! header, in every version and byte order.

use cortex_gguf::{ByteOrder, GgmlType, Gguf, GgufBuilder, OwnedValue, ValueType};
use proptest::prelude::*;

fn scalar(ty: ValueType) -> BoxedStrategy<OwnedValue> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(OwnedValue::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(OwnedValue::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(OwnedValue::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(OwnedValue::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(OwnedValue::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(OwnedValue::I32).boxed(),
        ValueType::F32 => any::<f32>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(OwnedValue::F32)
            .boxed(),
        ValueType::Bool => any::<bool>().prop_map(OwnedValue::Bool).boxed(),
        ValueType::U64 => any::<u64>().prop_map(OwnedValue::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(OwnedValue::I64).boxed(),
        ValueType::F64 => any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(OwnedValue::F64)
            .boxed(),
        _ => "\\PC{0,24}".prop_map(OwnedValue::String).boxed(),
    }
}

const SCALARS: [ValueType; 12] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

fn value() -> impl Strategy<Value = OwnedValue> {
    (
        proptest::sample::select(&SCALARS[..]),
        any::<bool>(),
        0usize..6,
    )
        .prop_flat_map(|(ty, array, n)| {
            if array {
                proptest::collection::vec(scalar(ty), n)
                    .prop_map(move |items| OwnedValue::Array(ty, items))
                    .boxed()
            } else {
                scalar(ty)
            }
        })
}

fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    (
        proptest::sample::select(GgmlType::all().collect::<Vec<_>>()),
        proptest::collection::vec(0u64..5, 0..4),
        0u64..3,
    )
        .prop_map(|(ty, rest, blocks)| {
            let block = ty.block().unwrap().elements;
            let mut dims = vec![block * blocks];
            dims.extend(rest);
            (ty, dims)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_then_read_gives_back_the_header(
        version in 1u32..=3,
        big in any::<bool>(),
        align_pow in proptest::option::of(0u32..10),
        kvs in proptest::collection::btree_map("[a-z._]{1,20}", value(), 0..12),
        tensors in proptest::collection::vec(tensor(), 0..8),
    ) {
        let order = if big { ByteOrder::Big } else { ByteOrder::Little };
        let mut b = GgufBuilder::new().version(version).byte_order(order);
        let kvs: Vec<(String, OwnedValue)> = kvs.into_iter().filter(|(k, _)| k != "general.alignment").collect();
        for (k, v) in &kvs {
            b = b.kv(k.clone(), v.clone());
        }
        if let Some(p) = align_pow {
            b = b.alignment(1 << p);
        }
        for (i, (ty, dims)) in tensors.iter().enumerate() {
            b = b.tensor(format!("t{i}"), dims.iter().copied(), *ty);
        }
        let bytes = b.build();
        let g = Gguf::parse(&bytes).unwrap();
        prop_assert_eq!(g.version(), version);
        prop_assert_eq!(g.byte_order(), order);
        prop_assert_eq!(g.alignment(), align_pow.map_or(32, |p| 1u64 << p));
        let read: Vec<(String, OwnedValue)> = g
            .kvs()
            .filter(|kv| kv.key != "general.alignment")
            .map(|kv| (kv.key.to_owned(), kv.value.to_owned_value().unwrap()))
            .collect();
        prop_assert_eq!(read, kvs.clone());
        for (k, v) in &kvs {
            prop_assert_eq!(&g.value(k).unwrap().to_owned_value().unwrap(), v);
        }
        prop_assert_eq!(g.tensor_count(), tensors.len());
        for ((i, (ty, dims)), t) in tensors.iter().enumerate().zip(g.tensors()) {
            prop_assert_eq!(t.name(), format!("t{i}"));
            prop_assert_eq!(t.ggml_type(), *ty);
            prop_assert_eq!(t.dims(), &dims[..]);
            prop_assert_eq!(t.offset() % g.alignment(), 0);
            prop_assert_eq!(g.tensor_data(&t).unwrap().len() as u64, t.bytes().unwrap());
        }
    }
}
