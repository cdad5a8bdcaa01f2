#![no_main]
//! Fuzz target `grpc_pushback`: the check in `fuzz/checks/grpc_pushback.rs`, which the stable replay runs too.

#[path = "../checks/grpc_pushback.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
