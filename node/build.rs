//! Embeds the detection content of `hub/` in the binary, so `palisade run` works with
//! no files installed besides itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "txt")) {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let hub = manifest.join("..").join("hub");
    println!("cargo:rerun-if-changed={}", hub.display());
    let mut files = Vec::new();
    walk(&hub, &mut files);
    let mut code = String::from(
        "/// Files of `hub/`, relative path and text.\npub static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path.strip_prefix(&hub).expect("walked under hub").to_string_lossy().replace('\\', "/");
        let abs = path.canonicalize().expect("hub file exists");
        let _ = writeln!(code, "    ({rel:?}, include_str!({:?})),", abs.display().to_string());
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("hub_files.rs");
    std::fs::write(out, code).expect("write hub_files.rs");
}
