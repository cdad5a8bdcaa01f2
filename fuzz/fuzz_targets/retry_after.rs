#![no_main]
//! Fuzz target `retry_after`: the check in `fuzz/checks/retry_after.rs`, which the stable replay runs too.

#[path = "../checks/retry_after.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
