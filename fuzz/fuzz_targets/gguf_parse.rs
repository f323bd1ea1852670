//! Any bytes as a GGUF file: parsing never panics, and every accessor of a parsed file works.
#![no_main]

use cortex_gguf::{Gguf, ModelInfo, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    let _ = (
        gguf.version(),
        gguf.byte_order(),
        gguf.alignment(),
        gguf.data_offset(),
    );
    for kv in gguf.kvs() {
        // Compared by their Debug form: a NaN value is the same record but never equal to itself.
        assert_eq!(
            format!("{:?}", gguf.value(kv.key)),
            format!("{:?}", Some(&kv.value)),
            "lookup by key finds the same value"
        );
        let _ = kv.value.to_string();
        let _ = kv.value.to_owned_value();
        let _ = gguf.get::<u64>(kv.key);
        let _ = gguf.get::<f64>(kv.key);
        let _ = gguf.get::<&str>(kv.key);
        if let Value::Array(a) = &kv.value {
            let n = a.iter().count() as u64;
            assert!(n <= a.len());
            let _ = a.get(0);
            let _ = a.get(a.len().saturating_sub(1));
            let _ = a.typed::<u32>().count();
        }
    }
    for t in gguf.tensors() {
        assert_eq!(
            gguf.tensor(t.name()),
            Some(t),
            "lookup by name finds the same tensor"
        );
        let _ = (t.dims(), t.elements(), t.ggml_type().to_string());
        let bytes = t.bytes().expect("a parsed tensor has a size");
        let data = gguf
            .tensor_data(&t)
            .expect("a parsed tensor's data is inside the input");
        assert_eq!(data.len() as u64, bytes);
    }
    let _ = ModelInfo::new(&gguf);
    let _ = gguf.arch_get::<u32>("block_count");
});
