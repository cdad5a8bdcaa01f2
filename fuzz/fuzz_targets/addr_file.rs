#![no_main]
//! Fuzz target `addr_file`: the check in `fuzz/checks/addr_file.rs`, which the stable replay runs too.

#[path = "../checks/addr_file.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
