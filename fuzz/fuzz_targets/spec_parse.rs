//! Config files come from users: parsing any bytes as a `ModelSpec` (TOML or JSON) must never
//! panic, and whatever parses must survive a round trip unchanged.
#![no_main]

use cortex_core::{ModelSpec, SupervisorConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = toml::from_str::<ModelSpec>(text) {
        let again = toml::to_string(&spec).expect("a parsed spec serializes");
        assert_eq!(
            toml::from_str::<ModelSpec>(&again).expect("and parses again"),
            spec
        );
        let _ = spec.served_name();
        let _ = spec.source.to_string();
    }
    if let Ok(spec) = serde_json::from_str::<ModelSpec>(text) {
        let again = serde_json::to_string(&spec).expect("a parsed spec serializes");
        assert_eq!(
            serde_json::from_str::<ModelSpec>(&again).expect("and parses again"),
            spec
        );
    }
    let _ = toml::from_str::<SupervisorConfig>(text);
});
