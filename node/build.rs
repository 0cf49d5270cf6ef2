//! Link settings of the `palisade` binary: the code an idle node runs, laid out together.
//!
//! Most of an idle node's memory is the binary's own code. The kernel maps a file's
//! pages around every page fault (64 KiB by default), so start-up code scattered over
//! the 13 MB text segment (RocksDB's static initialisers and database open, the regex,
//! YAML and CEL compilers) used to bring in almost all of it: 13 MB resident of code for
//! 3.4 MB actually run. `link/startup.order` lists the functions an idle node runs,
//! measured with callgrind by `scripts/startup-order.sh`; lld places them first, in one
//! block, so the rest of the code is only read when something uses it. A name the list
//! has and the binary lacks (Rust names carry a hash that changes with the code) is
//! ignored: a stale list costs memory, never correctness.
//!
//! Rust 1.90 and later link x86_64 Linux binaries with lld already; older toolchains
//! use the system's `ld.lld` when there is one, else link without the order.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/startup.order");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let Ok(order) = Path::new("link/startup.order").canonicalize() else {
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
