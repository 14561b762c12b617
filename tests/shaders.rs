//! Every WGSL source parses and validates with naga (no device needed), the list of
//! shaders the crate embeds is exactly the contents of `shaders/`, and the JET table the
//! overlay shader embeds is the one the reference uses.

use gradcam_wgpu::ops::{SHADERS, half_source};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn shader_list_matches_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    let listed: BTreeSet<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        listed.len(),
        SHADERS.len(),
        "duplicate names in ops::SHADERS"
    );
    assert_eq!(
        listed, on_disk,
        "ops::SHADERS must list every file in shaders/"
    );
    for (name, src) in SHADERS {
        let disk = std::fs::read_to_string(dir.join(name)).expect("readable shader");
        assert_eq!(*src, disk, "{name}: embedded source differs from the file");
    }
}

#[test]
fn shaders_parse_and_validate() {
    let mut failures = Vec::new();
    // The f16-weight builds (`--precision f16`) of the shaders that have one.
    let half: Vec<(String, String)> = SHADERS
        .iter()
        .filter_map(|(n, s)| half_source(s).map(|h| (format!("{n} (f16 weights)"), h)))
        .collect();
    let names: Vec<&str> = half.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["conv.wgsl (f16 weights)", "linear.wgsl (f16 weights)"],
        "shaders with an f16 build"
    );
    let all = SHADERS
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .chain(half);
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
