//! A preflight finding: what is wrong with a brief or a configuration,
//! where, and whether it stops the run.

use serde::{Deserialize, Serialize};

/// One preflight finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The brief section concerned.
    pub section: String,
    /// What is wrong.
    pub message: String,
    /// Whether it stops the run.
    pub blocking: bool,
}

impl Finding {
    /// A finding that stops the run.
    pub fn block(section: &str, message: impl Into<String>) -> Self {
        Finding {
            section: section.into(),
            message: message.into(),
            blocking: true,
        }
    }

    /// A finding that only warns.
    pub fn warn(section: &str, message: impl Into<String>) -> Self {
        Finding {
            section: section.into(),
            message: message.into(),
            blocking: false,
        }
    }
}
