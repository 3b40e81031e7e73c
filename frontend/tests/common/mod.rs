//! Shared by the fuzz tests: how many cases to run.

use proptest::test_runner::Config;

/// `KILN_FUZZ_CASES` cases per property (default `default`): a few thousand keep `cargo test`
/// fast; set it high to fuzz for longer. No failure files are written: a failure prints its
/// minimal input, which belongs in a regression unit test.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
