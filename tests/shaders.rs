//! Every WGSL module, composed from its kernel source and the shared pieces it imports,
//! parses and validates with naga (no device needed); the lists of shaders and pieces the
//! crate embeds are exactly the contents of `shaders/` and `shaders/lib/`; the composer
//! resolves imports as documented; and the JET table the overlay shader embeds is the one
//! the reference uses.

use gradcam_wgpu::gpu::shader::{ComposeError, LIBRARY, compose, compose_with};
use gradcam_wgpu::ops::{SHADERS, half_source};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn shader_list_matches_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    assert_listed(&dir, SHADERS, "ops::SHADERS");
    assert_listed(&dir.join("lib"), LIBRARY, "gpu::shader::LIBRARY");
}

/// `listed` names every `.wgsl` file in `dir` (by file name, or by stem for pieces) with
/// its exact contents.
fn assert_listed(dir: &Path, listed: &[(&str, &str)], what: &str) {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("shader directory exists")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    let file = |n: &str| {
        if n.ends_with(".wgsl") {
            n.to_string()
        } else {
            format!("{n}.wgsl")
        }
    };
    let names: BTreeSet<String> = listed.iter().map(|(n, _)| file(n)).collect();
    assert_eq!(names.len(), listed.len(), "duplicate names in {what}");
    assert_eq!(
        names,
        on_disk,
        "{what} must list every file in {}",
        dir.display()
    );
    for (name, src) in listed {
        let disk = std::fs::read_to_string(dir.join(file(name))).expect("readable shader");
        assert_eq!(*src, disk, "{name}: embedded source differs from the file");
    }
}

/// Every kernel source with its imports resolved.
fn composed() -> Vec<(String, String)> {
    SHADERS
        .iter()
        .map(|(n, s)| {
            let c = compose(s).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n.to_string(), c)
        })
        .collect()
}

#[test]
fn shaders_parse_and_validate() {
    let mut failures = Vec::new();
    // The f16-weight builds (`--precision f16`) of the shaders that have one.
    let composed = composed();
    let half: Vec<(String, String)> = composed
        .iter()
        .filter_map(|(n, s)| half_source(s).map(|h| (format!("{n} (f16 weights)"), h)))
        .collect();
    let names: Vec<&str> = half.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["conv.wgsl (f16 weights)", "linear.wgsl (f16 weights)"],
        "shaders with an f16 build"
    );
    let all = composed.into_iter().chain(half);
    for (name, src) in all {
        let (name, src) = (name.as_str(), src.as_str());
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{name}: parse error:\n{}",
                    e.emit_to_string_with_path(src, name)
                ));
                continue;
            }
        };
        let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}: validation error:\n{}",
                e.emit_to_string_with_path(src, name)
            ));
        }
        assert!(!module.entry_points.is_empty(), "{name}: no entry points");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_piece_is_imported_once_per_module() {
    let sources = SHADERS.iter().chain(LIBRARY);
    let imports: BTreeSet<&str> = sources
        .flat_map(|(_, s)| s.lines())
        .filter_map(|l| l.trim().strip_prefix("#import "))
        .collect();
    let pieces: BTreeSet<&str> = LIBRARY.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        imports, pieces,
        "pieces nothing imports, or imports of no piece"
    );
    // conv_subgroup.wgsl imports conv_base both itself and through conv_lanes.
    let composed = composed();
    let sub = &composed
        .iter()
        .find(|(n, _)| n == "conv_subgroup.wgsl")
        .unwrap()
        .1;
    assert_eq!(sub.matches("struct ConvParams {").count(), 1);
    assert!(!sub.contains("#import"));
}

/// A made-up library for the composer's rules.
const LIB: &[(&str, &str)] = &[
    ("a", "const A: u32 = 1u;\n"),
    ("b", "#import a\nconst B: u32 = A + 1u;\n"),
    // Imports itself and lacks the final newline.
    ("c", "#import c\nconst C: u32 = 3u;"),
];

#[test]
fn compose_pastes_each_piece_once_in_import_order() {
    let src = "// kernel\n#import b\n  #import a\nconst K: u32 = B;\n#import b\n";
    assert_eq!(
        compose_with(src, LIB).unwrap(),
        "// kernel\nconst A: u32 = 1u;\nconst B: u32 = A + 1u;\nconst K: u32 = B;\n"
    );
    assert_eq!(
        compose_with("#import c\nconst D: u32 = C;", LIB).unwrap(),
        "const C: u32 = 3u;\nconst D: u32 = C;"
    );
    let plain = "fn f() {}\n// #import a (a comment)\n";
    assert_eq!(compose_with(plain, LIB).unwrap(), plain);
}

#[test]
fn compose_rejects_unknown_and_malformed_imports() {
    let e = compose_with("const X: u32 = 1u;\n#import nope\n", LIB).unwrap_err();
    assert_eq!(
        e,
        ComposeError::UnknownImport {
            file: "kernel".into(),
            line: 2,
            name: "nope".into(),
            known: "a, b, c".into(),
        }
    );
    assert_eq!(
        e.to_string(),
        "kernel:2: unknown WGSL import `nope` (known: a, b, c)"
    );
    // An unknown import inside a piece names the piece.
    let lib = [("p", "\n#import q\n")];
    assert!(matches!(
        compose_with("#import p\n", &lib),
        Err(ComposeError::UnknownImport { file, line: 2, name, .. }) if file == "p" && name == "q"
    ));
    for bad in [
        "#import",
        "#import ",
        "#importa",
        "#import a b",
        "#import a;",
        "#import \"a\"",
    ] {
        assert!(
            matches!(
                compose_with(bad, LIB),
                Err(ComposeError::Malformed { line: 1, .. })
            ),
            "{bad}"
        );
    }
    assert!(compose("#import no_such_piece\n").is_err());
}

#[test]
fn overlay_shader_jet_matches_reference() {
    let src = SHADERS
        .iter()
        .find(|(n, _)| *n == "image.wgsl")
        .expect("image.wgsl")
        .1;
    let start = src
        .find("const JET = array<u32, 256>(")
        .expect("JET table in image.wgsl");
    let body = &src[start..];
    let body = &body[body.find('(').unwrap() + 1..body.find(");").unwrap()];
    let table: Vec<u32> = body
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let hex = t.trim_start_matches("0x").trim_end_matches('u');
            u32::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad JET entry {t}"))
        })
        .collect();
    assert_eq!(table.len(), 256);
    for (k, (packed, rgb)) in table.iter().zip(gradcam_wgpu::reference::jet()).enumerate() {
        let [r, g, b] = *rgb;
        let want = r as u32 | (g as u32) << 8 | (b as u32) << 16;
        assert_eq!(
            *packed, want,
            "JET[{k}]: shader {packed:#08x}, tools/jet_lut.json {rgb:?}"
        );
    }
}
