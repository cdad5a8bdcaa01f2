//! The fuzz targets `retry_after` and `grpc_pushback` (`fuzz/`) on the stable toolchain: every
//! seed of their corpus, then a seeded mutational campaign of 100 000 inputs each, through the
//! same checks the fuzz targets run (docs/reliability.md, "Fuzzing").

#[path = "../../../fuzz/checks/campaign.rs"]
mod campaign;
#[path = "../../../fuzz/checks/grpc_pushback.rs"]
mod grpc_pushback;
#[path = "../../../fuzz/checks/retry_after.rs"]
mod retry_after;

/// Inputs per parser in the random campaign (`PORTCULLIS_FUZZ_RUNS` to change it).
fn runs() -> usize {
    std::env::var("PORTCULLIS_FUZZ_RUNS").map_or(100_000, |n| n.parse().expect("a count"))
}

#[test]
fn retry_after_corpus() {
    assert!(campaign::replay("retry_after", retry_after::check) >= 10);
}

#[test]
fn retry_after_random() {
    campaign::random(
        "retry_after",
        retry_after::TOKENS,
        runs(),
        18,
        retry_after::check,
    );
}

#[test]
fn grpc_pushback_corpus() {
    assert!(campaign::replay("grpc_pushback", grpc_pushback::check) >= 10);
}

#[test]
fn grpc_pushback_random() {
    campaign::random(
        "grpc_pushback",
        grpc_pushback::TOKENS,
        runs(),
        18,
        grpc_pushback::check,
    );
}
