//! cargo-fuzz target: see `perturb_fuzz::safetensors` for what it feeds and what it asserts.
//! A third of the mutations are `perturb_fuzz::edit_header_number` (a whole number in the header
//! JSON replaced by an awkward one), the rest libFuzzer's own.
#![no_main]

use perturb_data::SplitMix64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // cargo-fuzz strips dead code, and libFuzzer looks the custom mutator up through a weak
    // symbol, which keeps nothing alive: without this never-taken call the mutator below is
    // dropped at link time and libFuzzer silently mutates bytes only.
    if std::hint::black_box(false) {
        // SAFETY: never runs (black_box(false)); it only makes the mutator reachable.
        unsafe { rust_fuzzer_custom_mutator(std::ptr::null_mut(), 0, 0, 0) };
    }
    let _ = perturb_fuzz::safetensors(data);
});

libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut rng = SplitMix64::new(u64::from(seed));
    if rng.below(3) == 0 {
        let mut v = data[..size].to_vec();
        perturb_fuzz::edit_header_number(&mut rng, &mut v);
        if v.len() <= max_size && v[..] != data[..size] {
            data[..v.len()].copy_from_slice(&v);
            return v.len();
        }
    }
    libfuzzer_sys::fuzzer_mutate(data, size, max_size)
});
