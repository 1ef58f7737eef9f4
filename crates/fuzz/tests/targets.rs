//! Every fuzz target under proptest, on stable: `SHOP_FUZZ_CASES` cases each (default 256, and
//! 64 for each method in the structured validation target; with `SHOP_FUZZ_CASES` set, that
//! target spreads the cases over the methods). `docs/fuzzing.md` has the command for long runs
//! and the coverage-guided driver.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn configured_cases() -> Option<u32> {
    std::env::var("SHOP_FUZZ_CASES").ok()?.parse().ok()
}

fn run(max_len: usize, target: impl Fn(&[u8])) {
    run_cases(configured_cases().unwrap_or(256), max_len, target);
}

fn run_cases(cases: u32, max_len: usize, target: impl Fn(&[u8])) {
    let config = Config {
        cases,
        // The inputs are random bytes; files of failing seeds would not help a reader.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec(any::<u8>(), 0..max_len), |data| {
        target(&data);
        Ok(())
    });
    assert!(
        result.is_ok(),
        "{}",
        result.err().map(|f| f.to_string()).unwrap_or_default()
    );
}

#[test]
fn validation_raw() {
    run(4096, shop_fuzz::validation::raw);
}

#[test]
fn validation_structured() {
    let methods = shop_fuzz::validation::method_count();
    let per_method = configured_cases().map_or(64, |total| {
        (total / u32::try_from(methods).unwrap_or(u32::MAX)).max(1)
    });
    for method in 0..methods {
        run_cases(per_method, 8192, |data| {
            shop_fuzz::validation::structured_method(method, data);
        });
    }
}

#[test]
fn envelope_headers() {
    run(2048, shop_fuzz::envelope::headers);
}

#[test]
fn page_token() {
    run(512, shop_fuzz::page_token::decode);
}

#[test]
fn grpc_timeout() {
    run(16, shop_fuzz::grpc_timeout::parse);
}

#[test]
fn jwt() {
    run(2048, shop_fuzz::jwt::verify);
}
