//! Fuzzes the watch hub against the store's own events: the input bytes
//! choose the steps of `tests/support/watch_model.rs` (writes, compactions,
//! watchers from the past, a slow reader); any watcher that misses, repeats,
//! reorders or splits an event is a crash.
#![no_main]

#[path = "../../tests/support/watch_model.rs"]
mod watch_model;

use libfuzzer_sys::fuzz_target;
use watch_model::{run, Step};

fuzz_target!(|data: &[u8]| {
    let steps: Vec<Step> = data
        .chunks(2)
        .map(|c| {
            let (a, b) = (c[0], c.get(1).copied().unwrap_or(0));
            match a % 18 {
                0..=5 => Step::Put(b),
                6..=7 => Step::Delete(b),
                8 => Step::DeletePrefix,
                9 => Step::Compact,
                10..=15 => Step::Pop(b % 4),
                _ => Step::Watch {
                    from_back: b >> 4,
                    prefix: a & 1 == 1,
                    key: b & 0xf,
                },
            }
        })
        .collect();
    if let Err(e) = run(&steps) {
        panic!("{e}");
    }
});
