//! The committed C header is what cbindgen generates from the source today.
//! `PERTURB_BLESS=1 cargo test -p perturb-capi --test header` rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_is_generated_from_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = dir.join("include/perturb.h");
    if std::env::var_os("PERTURB_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/perturb.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/perturb.h differs from what cbindgen generates from src/ \
         (rerun with PERTURB_BLESS=1 to rewrite it, and commit it)"
    );
}
