//! Embeds the detection content of `hub/` in the binary, so `palisade run` works with
//! no files installed besides itself, and lays out the code an idle node runs together.
//!
//! Most of an idle node's memory is the binary's own code. The kernel maps a file's
//! pages around every page fault (64 KiB by default), so start-up code scattered over
//! the 13 MB text segment (RocksDB's static initialisers and database open, the regex,
//! YAML and CEL compilers) used to bring in almost all of it: 13 MB of code resident for
//! 3.4 MB actually run. `link/startup.order` lists the functions an idle node runs,
//! measured with callgrind by `scripts/startup-order.sh`; lld places them first, in one
//! block, so the rest of the code is only read when something uses it. A name the list
//! has and the binary lacks is ignored: a stale list costs memory, never correctness.
//!
//! Rust 1.90 and later link x86_64 Linux binaries with lld already; older toolchains
//! use the system's `ld.lld` when there is one, else link without the order.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    link_startup_order(&manifest);
}

/// Passes lld the order of `link/startup.order` for the `palisade` binary (see the
/// crate documentation above).
fn link_startup_order(manifest: &Path) {
    println!("cargo:rerun-if-changed={}", manifest.join("link/startup.order").display());
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let Ok(order) = manifest.join("link/startup.order").canonicalize() else {
        println!("cargo:warning=link/startup.order is missing: linking without the start-up code order");
        return;
    };
    let rust_lld = target == "x86_64-unknown-linux-gnu" && rustc_minor().is_some_and(|m| m >= 90);
    if !rust_lld {
        if !on_path("ld.lld") {
            println!(
                "cargo:warning=ld.lld not found (apt-get install lld): linking without the start-up code order, \
                 an idle node uses about 8 MB more memory"
            );
            return;
        }
        println!("cargo:rustc-link-arg-bin=palisade=-fuse-ld=lld");
    }
    println!("cargo:rustc-link-arg-bin=palisade=-Wl,--symbol-ordering-file={}", order.display());
    println!("cargo:rustc-link-arg-bin=palisade=-Wl,--no-warn-symbol-ordering");
}

/// The minor version of the compiler (`rustc 1.95.0 ...` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}
