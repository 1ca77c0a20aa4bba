//! Where the file tools may read and write: paths given by a caller (maybe
//! a remote MCP client) are taken relative to one root folder and may not
//! leave it, by `..` or by a symlink.

use std::path::{Component, Path, PathBuf};

use crate::{ToolError, invalid};

/// The folder file paths are relative to.
#[derive(Debug, Clone)]
pub struct FilesRoot {
    root: PathBuf,
}

impl FilesRoot {
    /// `root` must exist; it is resolved once (symlinks and all).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Self { root: root.canonicalize()? })
    }

    /// The root, canonical.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `given` inside the root: relative to it, or absolute but inside it.
    /// What exists of the path must resolve inside the root too, so a
    /// symlink cannot lead out.
    pub fn resolve(&self, given: &str) -> Result<PathBuf, ToolError> {
        let outside = || invalid(format!("path {given:?} is outside the files root {}", self.root.display()));
        if given.is_empty() {
            return Err(invalid("path is empty"));
        }
        let mut lexical = if Path::new(given).is_absolute() { PathBuf::new() } else { self.root.clone() };
        for component in Path::new(given).components() {
            match component {
                Component::ParentDir => {
                    if !lexical.pop() {
                        return Err(outside());
                    }
                }
                Component::CurDir => {}
                other => lexical.push(other),
            }
        }
        if !lexical.starts_with(&self.root) {
            return Err(outside());
        }
        // The deepest part that exists decides where symlinks lead.
        let mut existing = lexical.as_path();
        while !existing.exists() {
            existing = existing.parent().ok_or_else(outside)?;
        }
        let resolved = existing.canonicalize().map_err(|err| invalid(format!("path {given:?}: {err}")))?;
        if !resolved.starts_with(&self.root) {
            return Err(outside());
        }
        Ok(lexical)
    }

    /// Whether `path`, symlinks followed, is inside the root: each entry of
    /// a folder a tool lists is checked, so a link cannot lead out.
    pub fn contains(&self, path: &Path) -> bool {
        path.canonicalize().is_ok_and(|real| real.starts_with(&self.root))
    }

    /// `path` relative to the root, for outputs (paths a caller can pass back).
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::FilesRoot;

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = FilesRoot::new(dir.path()).unwrap();
        let inside = root.resolve("sub/new.json").unwrap();
        assert_eq!(inside, root.path().join("sub/new.json"));
        assert_eq!(root.resolve("sub/../a.csv").unwrap(), root.path().join("a.csv"));
        assert!(root.resolve(&root.path().join("x").to_string_lossy()).is_ok(), "absolute inside is fine");
        for bad in ["../escape.json", "sub/../../escape", "/etc/passwd", ""] {
            assert!(root.resolve(bad).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", dir.path().join("out")).unwrap();
            let err = root.resolve("out/x.json").unwrap_err().to_string();
            assert!(err.contains("outside the files root"), "{err}");
        }
    }
}
