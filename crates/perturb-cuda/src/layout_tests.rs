//! Ties kernels/params.cuh to perturb-core's parameter structs: every struct in the header has
//! the Rust struct's fields, in order, with matching types, and every `static_assert` on a
//! size or offset agrees with `size_of` / `offset_of!` on the Rust side.

use perturb_core::ops::*;
use std::collections::HashMap;
use std::mem::{offset_of, size_of};

/// (struct, size, [(field, C type, offset)]) for every Rust parameter struct.
type Layout = (&'static str, usize, Vec<(&'static str, &'static str, usize)>);

macro_rules! layouts {
    ($( $ty:ident { $($f:ident : $t:ident),* $(,)? } )*) => {
        vec![ $( (stringify!($ty), size_of::<$ty>(), vec![ $( (stringify!($f), c_type(stringify!($t)), offset_of!($ty, $f)) ),* ]) ),* ]
    };
}

fn c_type(rust: &str) -> &'static str {
    match rust {
        "u32" => "unsigned",
        "f32" => "float",
        _ => "?",
    }
}

fn rust_layouts() -> Vec<Layout> {
    // Field lists copied from perturb-core/src/ops.rs; offset_of! fails to compile if a field
    // is renamed there, and the size comparison below catches one added.
    layouts! {
        Conv2dParams { n: u32, c_in: u32, h: u32, w: u32, c_out: u32, kh: u32, kw: u32, stride: u32, pad: u32, h_out: u32, w_out: u32, _pad0: u32 }
        LinearParams { m: u32, k: u32, n: u32, _pad0: u32 }
        BiasParams { outer: u32, channels: u32, inner: u32, _pad0: u32 }
        Pool2dParams { n: u32, c: u32, h: u32, w: u32, k: u32, stride: u32, h_out: u32, w_out: u32 }
        XentParams { n: u32, classes: u32, grad_scale: f32, _pad0: u32 }
        EltParams { len: u32, a: f32, b: f32, _pad0: u32 }
        RowParams { rows: u32, cols: u32, _pad0: u32, _pad1: u32 }
        StepParams { n: u32, d: u32, alpha: f32, eps: f32, lo: f32, hi: f32, _pad0: u32, _pad1: u32 }
        SgdParams { len: u32, lr: f32, momentum: f32, weight_decay: f32, nesterov: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
        AdamParams { len: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, bc1: f32, bc2: f32, decoupled: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
        RngParams { len: u32, key_lo: u32, key_hi: u32, ctr_lo: u32, ctr_hi: u32, dist: u32, a: f32, b: f32 }
    }
}

/// The header's structs (each declared at the start of a line, so the helper templates are
/// not counted): name -> [(field, C type)] in declaration order.
fn header_structs(src: &str) -> HashMap<String, Vec<(String, String)>> {
    let mut out = HashMap::new();
    let mut rest = src;
    while let Some(i) = rest.find("\nstruct ") {
        rest = &rest[i + 8..];
        let Some(open) = rest.find('{') else { break };
        let name = rest[..open].trim().to_string();
        let Some(close) = rest.find("};") else { break };
        let mut fields = Vec::new();
        for decl in rest[open + 1..close].split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let (ty, names) = decl.split_once(char::is_whitespace).unwrap_or((decl, ""));
            for f in names.split(',') {
                fields.push((f.trim().to_string(), ty.to_string()));
            }
        }
        out.insert(name, fields);
        rest = &rest[close..];
    }
    out
}

#[test]
fn header_layout_matches_rust() {
    let src = crate::kernels::HEADERS[0].1;
    let structs = header_structs(src);
    let rust = rust_layouts();
    assert_eq!(structs.len(), rust.len(), "params.cuh declares {:?}", structs.keys().collect::<Vec<_>>());
    let mut sizes = HashMap::new();
    let mut offsets = HashMap::new();
    for (name, size, fields) in &rust {
        let header = structs.get(*name).unwrap_or_else(|| panic!("params.cuh lacks struct {name}"));
        let want: Vec<(String, String)> = fields.iter().map(|(f, t, _)| (f.to_string(), t.to_string())).collect();
        assert_eq!(header, &want, "{name}: fields and types differ between params.cuh and ops.rs");
        sizes.insert(name.to_string(), *size);
        for (f, _, off) in fields {
            offsets.insert(format!("{name}.{f}"), *off);
        }
    }
    let mut checked = 0;
    for line in src.lines().filter(|l| l.starts_with("static_assert(")) {
        let (lhs, rhs) =
            line["static_assert(".len()..].split_once(" == ").unwrap_or_else(|| panic!("unparsed: {line}"));
        let value: usize =
            rhs.split(',').next().and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("unparsed: {line}"));
        let actual = if let Some(s) = lhs.strip_prefix("sizeof(") {
            sizes[s.trim_end_matches(')')]
        } else if let Some(s) = lhs.strip_prefix("PT_OFFSET(") {
            let (t, f) = s.trim_end_matches(')').split_once(", ").unwrap_or_else(|| panic!("unparsed: {line}"));
            offsets[&format!("{t}.{f}")]
        } else {
            panic!("unparsed: {line}")
        };
        assert_eq!(actual, value, "{line}: Rust says {actual}");
        checked += 1;
    }
    let named_fields = rust.iter().flat_map(|r| r.2.iter().skip(1)).filter(|f| !f.0.starts_with("_pad")).count();
    assert_eq!(checked, rust.len() + named_fields, "every size and every named field's offset is asserted");
}
