//! Detection content: the YAML files of `hub/` (parsers, scenarios, data lists), either
//! embedded in the binary or read from a directory the operator names.

use std::fmt;

/// One file of detection content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Path relative to the hub root, with `/` separators, e.g.
    /// `parsers/s01-parse/sshd.yaml` or `data/bad_user_agents.txt`. Stages and kinds are
    /// read from it, and errors quote it.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// Broken detection content: which file, which line, what is wrong. Stops start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HubError {
    /// The file, relative to the hub root (or as the operator gave it).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl HubError {
    /// An error at `file:line`.
    pub fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        HubError { file: file.into(), line, message: message.into() }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}
