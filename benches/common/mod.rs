//! What every benchmark binary shares: its arguments and smoke mode.
#![allow(dead_code)]

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
/// then a benchmark runs as a quick smoke test of itself.
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
