//! Adapter listing and selection on whatever this machine has (lavapipe in CI).

use perturb_wgpu::{WgpuBackend, list_adapters, test_backend};

#[test]
fn lists_adapters_and_opens_the_best() {
    let list = list_adapters();
    for a in &list {
        println!("{a}");
        assert!(!a.name.is_empty());
        assert!(a.max_storage_buffer_binding_size > 0);
        assert!(a.max_compute_invocations_per_workgroup >= 256, "{a}");
    }
    let Some(b) = test_backend() else { return };
    assert!(!list.is_empty(), "a backend opened but no adapter was listed");
    assert!(list.iter().any(|a| a.name == b.adapter().name));
}

#[test]
fn unknown_adapter_name_lists_the_names() {
    if list_adapters().is_empty() {
        println!("skipped: wgpu unavailable: no adapter");
        return;
    }
    let e = WgpuBackend::with_adapter(Some("no-such-adapter-xyz")).unwrap_err().to_string();
    assert!(e.contains("no-such-adapter-xyz") && e.contains("adapters:"), "{e}");
    for a in list_adapters() {
        assert!(e.contains(&a.name), "{e}");
    }
}

#[test]
fn adapter_by_name_substring() {
    let list = list_adapters();
    let Some(first) = list.first() else {
        println!("skipped: wgpu unavailable: no adapter");
        return;
    };
    // A lower-cased fragment of the name selects it.
    let frag: String = first.name.to_lowercase().chars().take(6).collect();
    let b = WgpuBackend::with_adapter(Some(&frag)).expect("open by name");
    assert!(b.adapter().name.to_lowercase().contains(&frag));
}
