//! The gateway's SSE parser and usage tracker: any bytes, split anywhere, never panic, and the
//! split does not change the events or the usage.
#![no_main]

use cortex_gateway::sse::{SseParser, UsageTracker};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], cut: usize) -> (Vec<Vec<u8>>, String) {
    let mut p = SseParser::new();
    let mut t = UsageTracker::new();
    let mut events = Vec::new();
    let (a, b) = data.split_at(cut.min(data.len()));
    for part in [a, b] {
        p.feed(part, |d| {
            t.observe(d);
            events.push(d.to_vec());
        });
    }
    (
        events,
        format!("{:?} {} {}", t.usage(), t.saw_error(), t.saw_done()),
    )
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b));
    assert_eq!(run(data, cut), run(data, 0));
});
