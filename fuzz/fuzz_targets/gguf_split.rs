//! Any bytes as the shards of a split set: parsing and checking the set never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cortex_gguf::fuzzing::split_set(data);
});
