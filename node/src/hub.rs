//! Loading detection content: the copy embedded at build time, or a directory the
//! operator names with `hub_dir`.

use anyhow::{Context, Result};
use palisade_actors::parser::Parsers;
use palisade_actors::scenario::Scenarios;
use palisade_actors::{HubError, HubFile};
use std::path::Path;
use std::sync::Arc;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/hub_files.rs"));
}

/// Compiled parsers and scenarios.
#[derive(Clone)]
pub struct Hub {
    /// Parsers, stage by stage.
    pub parsers: Arc<Parsers>,
    /// Scenarios.
    pub scenarios: Arc<Scenarios>,
    /// Where the content came from, for messages.
    pub origin: String,
}

/// The hub files, embedded or from `dir`.
pub fn files(dir: Option<&Path>) -> Result<Vec<HubFile>> {
    let Some(dir) = dir else {
        return Ok(embedded::EMBEDDED
            .iter()
            .map(|(path, text)| HubFile { path: (*path).to_owned(), text: (*text).to_owned() })
            .collect());
    };
    let mut out = Vec::new();
    collect(dir, dir, &mut out)?;
    if out.is_empty() {
        anyhow::bail!("hub_dir {}: no .yaml or .txt files found", dir.display());
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<HubFile>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading hub directory {}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "txt")) {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push(HubFile { path: rel, text });
        }
    }
    Ok(())
}

/// Loads and compiles the hub. Errors name the file (under `dir` when given) and line.
pub fn load(dir: Option<&Path>) -> Result<Hub> {
    let files = files(dir)?;
    let locate = |e: HubError| -> anyhow::Error {
        match dir {
            Some(d) => anyhow::anyhow!("{}", HubError { file: d.join(&e.file).display().to_string(), ..e }),
            None => anyhow::anyhow!("embedded hub/{e}"),
        }
    };
    let parsers = Parsers::load(&files).map_err(locate)?;
    let scenarios = Scenarios::load(&files).map_err(locate)?;
    Ok(Hub {
        parsers: Arc::new(parsers),
        scenarios: Arc::new(scenarios),
        origin: dir.map_or_else(|| "embedded".to_owned(), |d| d.display().to_string()),
    })
}
