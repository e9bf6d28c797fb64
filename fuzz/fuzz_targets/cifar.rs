//! cargo-fuzz target: see `perturb_fuzz::cifar` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = perturb_fuzz::cifar(data);
});
