//! The input agent's contract on arbitrary bytes: the first byte picks the piece size (1..=64)
//! in which the rest is fed, so that every split of a head, chunk line or body is reached.
#![no_main]

use endosec_dataplane::http::contract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&first, rest)) = data.split_first() {
        contract::check(rest, usize::from(first % 64) + 1);
    }
});
