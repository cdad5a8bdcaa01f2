//! The fuzz targets `addr_file` and `etcd_value` (`fuzz/`) on the stable toolchain: every seed
//! of their corpus, then a seeded mutational campaign of 100 000 inputs each, through the same
//! checks the fuzz targets run (docs/reliability.md, "Fuzzing").

#[path = "../../../fuzz/checks/addr_file.rs"]
mod addr_file;
#[path = "../../../fuzz/checks/campaign.rs"]
mod campaign;
#[cfg(feature = "etcd")]
#[path = "../../../fuzz/checks/etcd_value.rs"]
mod etcd_value;

/// Inputs per parser in the random campaign (`PORTCULLIS_FUZZ_RUNS` to change it).
fn runs() -> usize {
    std::env::var("PORTCULLIS_FUZZ_RUNS").map_or(100_000, |n| n.parse().expect("a count"))
}

#[test]
fn addr_file_corpus() {
    assert!(campaign::replay("addr_file", addr_file::check) >= 10);
}

#[test]
fn addr_file_random() {
    campaign::random("addr_file", addr_file::TOKENS, runs(), 18, addr_file::check);
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_value_corpus() {
    assert!(campaign::replay("etcd_value", etcd_value::check) >= 10);
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_value_random() {
    campaign::random(
        "etcd_value",
        etcd_value::TOKENS,
        runs(),
        18,
        etcd_value::check,
    );
}
