//! The allow list: which programs this worker's operator lets the runtime start.
//!
//! Until edgeio authenticates its callers, anyone who reaches the root API could otherwise
//! run any command on every worker, so the runtime starts only programs the operator named
//! (`worker --allow-native PATH,…`); the list is empty by default.
//!
//! An image is an absolute path or a bare command name looked up on the instance's `PATH`
//! (the runtime's [`crate::ProcessConfig::path`]). Both the image and the allowed entries
//! are canonicalized (symlinks resolved) before they are compared, so `/bin/sh` is allowed
//! by allowing `/usr/bin/sh` on a merged-`/usr` system and a symlink cannot smuggle in
//! another program.

use edgeio_core::runtime::RuntimeError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The rule an image breaks when it is not on the allow list.
pub const NOT_ALLOWED: &str =
    "not allowed on this worker: start the worker with --allow-native <path>";

/// The canonical paths of the allowed programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    programs: Vec<PathBuf>,
}

impl AllowList {
    /// The list from the configured paths. An entry that does not resolve (no such file)
    /// is kept as written, so it matches nothing until the program is installed, and is
    /// reported in the log.
    pub fn new(paths: &[PathBuf]) -> AllowList {
        let programs = paths
            .iter()
            .map(|p| match std::fs::canonicalize(p) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(program = %p.display(), error = %e, "allowed program does not resolve; it matches nothing");
                    p.clone()
                }
            })
            .collect();
        AllowList { programs }
    }

    /// How many programs are allowed.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// The allowed programs (canonical where they resolved).
    pub fn programs(&self) -> &[PathBuf] {
        &self.programs
    }

    /// The canonical program `image` names, if the list allows it; otherwise
    /// [`RuntimeError::Invalid`] on field `image` with the rule [`NOT_ALLOWED`].
    ///
    /// Why an image does not resolve (no such file, not executable …) is told only for
    /// images the list names as written: anyone else learns nothing about the worker's files.
    pub fn check(&self, image: &str, path_env: &str) -> Result<PathBuf, RuntimeError> {
        match resolve(image, path_env) {
            Ok(resolved) if self.programs.contains(&resolved) => Ok(resolved),
            Err(e) if self.programs.iter().any(|p| p.as_os_str() == image) => Err(e),
            _ => Err(invalid(image, NOT_ALLOWED)),
        }
    }
}

fn invalid(image: &str, rule: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid {
        field: "image".into(),
        value: image.into(),
        rule: rule.into(),
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The canonical path of the program `image` names: an absolute path as is, a bare name
/// looked up in the directories of `path_env` (colon-separated). Relative paths with a
/// slash are refused: they would depend on the worker's current directory.
pub fn resolve(image: &str, path_env: &str) -> Result<PathBuf, RuntimeError> {
    if image.is_empty() {
        return Err(invalid(image, "must name a program"));
    }
    let found = if image.starts_with('/') {
        let path = PathBuf::from(image);
        if !path.exists() {
            return Err(invalid(image, "no such file"));
        }
        path
    } else if image.contains('/') {
        return Err(invalid(
            image,
            "must be an absolute path or a bare command name looked up on PATH",
        ));
    } else {
        path_env
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(image))
            .find(|p| is_executable_file(p))
            .ok_or_else(|| {
                invalid(
                    image,
                    format!("no executable of that name on PATH {path_env}"),
                )
            })?
    };
    let canonical = std::fs::canonicalize(&found)
        .map_err(|e| invalid(image, format!("cannot be resolved: {e}")))?;
    if !is_executable_file(&canonical) {
        return Err(invalid(image, "is not an executable file"));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

    fn rule(e: RuntimeError) -> String {
        match e {
            RuntimeError::Invalid { field, rule, .. } => {
                assert_eq!(field, "image");
                rule
            }
            other => panic!("expected invalid image, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let list = AllowList::default();
        assert!(list.is_empty());
        assert_eq!(rule(list.check("/bin/sh", PATH).unwrap_err()), NOT_ALLOWED);
    }

    #[test]
    fn a_bare_name_and_a_symlink_resolve_to_the_allowed_program() {
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let list = AllowList::new(&[PathBuf::from("/bin/sh")]);
        assert_eq!(list.check("sh", PATH).unwrap(), sh);
        assert_eq!(list.check("/bin/sh", PATH).unwrap(), sh);
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&sh, &link).unwrap();
        assert_eq!(list.check(link.to_str().unwrap(), PATH).unwrap(), sh);
    }

    #[test]
    fn a_symlink_to_another_program_is_not_allowed() {
        let list = AllowList::new(&[PathBuf::from("/bin/sh")]);
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("sh");
        std::os::unix::fs::symlink("/bin/true", &link).unwrap();
        assert_eq!(
            rule(list.check(link.to_str().unwrap(), PATH).unwrap_err()),
            NOT_ALLOWED
        );
    }

    #[test]
    fn images_that_do_not_resolve_are_not_allowed_unless_the_list_names_them() {
        let list = AllowList::new(&[PathBuf::from("/bin/sh"), PathBuf::from("/opt/gone")]);
        for image in ["/nonexistent/prog", "./sh", "no-such-command-xyz", ""] {
            assert_eq!(rule(list.check(image, PATH).unwrap_err()), NOT_ALLOWED);
        }
        assert_eq!(
            rule(list.check("/opt/gone", PATH).unwrap_err()),
            "no such file"
        );
    }

    #[test]
    fn resolution_says_why_an_image_names_no_program() {
        assert_eq!(
            rule(resolve("/nonexistent/prog", PATH).unwrap_err()),
            "no such file"
        );
        assert!(rule(resolve("./sh", PATH).unwrap_err()).contains("absolute path"));
        assert!(rule(resolve("no-such-command-xyz", PATH).unwrap_err())
            .starts_with("no executable of that name on PATH"));
        assert_eq!(rule(resolve("", PATH).unwrap_err()), "must name a program");
        assert_eq!(
            rule(resolve("/etc", PATH).unwrap_err()),
            "is not an executable file"
        );
    }
}
