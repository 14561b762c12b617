//! WGSL composition. WGSL has no includes, so a kernel source names each shared piece it
//! uses on a line `#import NAME`, and [`compose`] pastes `shaders/lib/NAME.wgsl` in that
//! line's place: in import order, each piece once per module (a repeated import is
//! dropped), pieces importing pieces. WGSL declarations may come in any order, so a piece
//! may use globals that the kernel declares (such as its bindings).
//!
//! Composition is string work on sources embedded at compile time: no file access, so it
//! runs wherever the engine does.

/// The shared pieces, by import name.
pub const LIBRARY: &[(&str, &str)] = &[
    (
        "conv_base",
        include_str!("../../shaders/lib/conv_base.wgsl"),
    ),
    (
        "conv_lanes",
        include_str!("../../shaders/lib/conv_lanes.wgsl"),
    ),
    ("erf", include_str!("../../shaders/lib/erf.wgsl")),
    ("grid", include_str!("../../shaders/lib/grid.wgsl")),
    ("inf", include_str!("../../shaders/lib/inf.wgsl")),
    ("philox", include_str!("../../shaders/lib/philox.wgsl")),
    ("reduce", include_str!("../../shaders/lib/reduce.wgsl")),
    ("score", include_str!("../../shaders/lib/score.wgsl")),
    ("weights", include_str!("../../shaders/lib/weights.wgsl")),
];

/// Why a source does not compose.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}:{line}: unknown WGSL import `{name}` (known: {known})")]
    UnknownImport {
        /// `kernel`, or the piece holding the import.
        file: String,
        line: usize,
        name: String,
        known: String,
    },
    #[error("{file}:{line}: `{text}` is not `#import NAME`")]
    Malformed {
        file: String,
        line: usize,
        text: String,
    },
}

/// `src` with its imports resolved against [`LIBRARY`].
pub fn compose(src: &str) -> Result<String, ComposeError> {
    compose_with(src, LIBRARY)
}

/// [`compose`] against another set of pieces.
pub fn compose_with(src: &str, library: &[(&str, &str)]) -> Result<String, ComposeError> {
    let mut out = String::with_capacity(src.len());
    let mut seen = Vec::new();
    paste(src, "kernel", library, &mut seen, &mut out)?;
    Ok(out)
}

fn paste<'a>(
    src: &str,
    file: &str,
    library: &[(&'a str, &'a str)],
    seen: &mut Vec<&'a str>,
    out: &mut String,
) -> Result<(), ComposeError> {
    for (i, line) in src.split_inclusive('\n').enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("#import") else {
            out.push_str(line);
            continue;
        };
        let name = rest.trim();
        let ident = !name.is_empty()
            && rest.starts_with(char::is_whitespace)
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(ComposeError::Malformed {
                file: file.to_string(),
                line: i + 1,
                text: line.trim().to_string(),
            });
        }
        let Some(&(name, piece)) = library.iter().find(|(n, _)| *n == name) else {
            return Err(ComposeError::UnknownImport {
                file: file.to_string(),
                line: i + 1,
                name: name.to_string(),
                known: library
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if seen.contains(&name) {
            continue;
        }
        // Marked before pasting, so pieces importing each other terminate.
        seen.push(name);
        paste(piece, name, library, seen, out)?;
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(())
}
