//! The gateway's request body scanner: any bytes give a result or an error, never a panic; a
//! body it accepts is valid JSON, and splicing `include_usage` keeps it valid JSON.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scanned) = cortex_gateway::scan::scan(data) {
        assert!(serde_json::from_slice::<serde_json::Value>(data).is_ok());
        let spliced = scanned.with_usage_requested(&Bytes::copy_from_slice(data));
        let v: serde_json::Value = serde_json::from_slice(&spliced).expect("spliced body is JSON");
        if scanned.stream {
            assert_eq!(v["stream_options"]["include_usage"], true);
        }
    }
});
