//! The kernel allow list: which image files the operator lets this runtime boot
//! ([`crate::MirageConfig::allow`]; the reference worker's `--allow-kernel PATH,…`).
//!
//! Until edgeio authenticates its callers, anyone who reaches the root API could otherwise
//! make a worker's qemu read any file it can open. The image and the allowed entries are
//! compared once symlinks are resolved, so a link cannot smuggle in another file, and why
//! an image cannot be read is told only for images the list names as written: anyone else
//! learns nothing about the worker's files.

use edgeio_core::runtime::RuntimeError;
use std::path::{Path, PathBuf};

/// The rule an image breaks when it is not on the allow list.
pub const NOT_ALLOWED: &str =
    "not allowed on this worker: start the worker with --allow-kernel <path>";

/// The allowed kernels with symlinks resolved. An entry that does not resolve (no such file
/// yet) is kept as written, so it matches nothing until the file exists, and is logged.
pub fn canonical(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| match std::fs::canonicalize(p) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(kernel = %p.display(), error = %e, "allowed kernel does not resolve; it matches nothing");
                p.clone()
            }
        })
        .collect()
}

/// The resolved path of `image` when `allowed` (already [`canonical`]) holds it; otherwise
/// [`RuntimeError::Invalid`] on field `image` with the rule [`NOT_ALLOWED`], or — for an
/// image the list names as written — why it cannot be resolved.
pub fn check(allowed: &[PathBuf], image: &str) -> Result<PathBuf, RuntimeError> {
    let invalid = |rule: String| RuntimeError::Invalid {
        field: "image".into(),
        value: image.into(),
        rule,
    };
    let named = allowed.iter().any(|p| p.as_os_str() == image);
    if !Path::new(image).is_absolute() {
        return Err(invalid(if named {
            "must be an absolute path".into()
        } else {
            NOT_ALLOWED.into()
        }));
    }
    match std::fs::canonicalize(image) {
        Ok(resolved) if allowed.contains(&resolved) => Ok(resolved),
        Err(e) if named => Err(invalid(if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".into()
        } else {
            format!("cannot be resolved: {e}")
        })),
        _ => Err(invalid(NOT_ALLOWED.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_empty_list_allows_nothing() {
        assert_eq!(rule(check(&[], "/bin/sh").unwrap_err()), NOT_ALLOWED);
    }

    #[test]
    fn a_listed_kernel_and_a_symlink_to_it_are_allowed_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k.elf");
        std::fs::write(&kernel, b"kernel").unwrap();
        let link = dir.path().join("link.elf");
        std::os::unix::fs::symlink(&kernel, &link).unwrap();
        let list = canonical(std::slice::from_ref(&link));
        let resolved = std::fs::canonicalize(&kernel).unwrap();
        assert_eq!(check(&list, kernel.to_str().unwrap()).unwrap(), resolved);
        assert_eq!(check(&list, link.to_str().unwrap()).unwrap(), resolved);
    }

    #[test]
    fn a_symlink_to_another_file_or_a_relative_path_is_not_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k.elf");
        std::fs::write(&kernel, b"kernel").unwrap();
        let list = canonical(&[kernel]);
        let link = dir.path().join("sneaky.elf");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert_eq!(
            rule(check(&list, link.to_str().unwrap()).unwrap_err()),
            NOT_ALLOWED
        );
        assert_eq!(rule(check(&list, "k.elf").unwrap_err()), NOT_ALLOWED);
    }

    #[test]
    fn only_a_listed_image_says_why_it_cannot_be_read() {
        let list = canonical(&[PathBuf::from("/nonexistent/listed.elf")]);
        assert_eq!(
            rule(check(&list, "/nonexistent/listed.elf").unwrap_err()),
            "no such file"
        );
        assert_eq!(
            rule(check(&list, "/nonexistent/other.elf").unwrap_err()),
            NOT_ALLOWED
        );
    }
}
