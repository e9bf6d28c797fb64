//! cargo-fuzz target: see `perturb_fuzz::idx_gz` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = perturb_fuzz::idx_gz(data);
});
