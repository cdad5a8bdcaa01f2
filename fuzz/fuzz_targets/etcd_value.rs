#![no_main]
//! Fuzz target `etcd_value`: the check in `fuzz/checks/etcd_value.rs`, which the stable replay runs too.

#[path = "../checks/etcd_value.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
