//! [`ScratchDir`]: a test's own directory for database files and briefs,
//! removed when the test passes.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, named after
/// the test and the process, removed with everything in it when dropped,
/// unless the thread is panicking: a failed test's files stay for a look.
///
/// ```
/// use backfill_testkit::scratch::ScratchDir;
///
/// let path = {
///     let dir = ScratchDir::new("doc");
///     std::fs::write(dir.join("brief.yaml"), "reason: x").unwrap();
///     assert!(dir.join("brief.yaml").exists());
///     dir.to_path_buf()
/// };
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `backfill-<name>-<pid>` under the temporary directory, emptied if
    /// an earlier process of the same id left it.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("backfill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        ScratchDir(dir)
    }
}

impl Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
