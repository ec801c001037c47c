//! A tier's trust files in its data folder: its CA and the join token it hands out, made on
//! first start and read back on every later one, so a restart keeps the deployment's one trust
//! root and the tokens already given out.
//!
//! Files: `ca.crt` (this CA's chain to the root: what members trust), `ca.key` (mode 0600),
//! `trust.json` (what rebuilding the CA needs besides its key and certificate), `join.token`
//! (mode 0600: one raw token on one line, for the operator to hand over) and `tokens.json`
//! (mode 0600: the records of the tokens issued, hashed) and `members.json` (mode 0600: who
//! joined, their credentials hashed). Secrets are never printed; callers
//! print the paths.

use crate::{CertificateAuthority, JoinToken, MemberRecord, TokenRecord, TrustError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The format of `trust.json`.
const FORMAT: u32 = 1;

/// What `trust.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    format: u32,
    name: String,
    root: bool,
    parents_pem: String,
    root_pem: String,
    not_after: i64,
}

/// A data folder's trust: the CA, the tokens issued, and where the files are.
#[derive(Debug)]
pub struct TrustFolder {
    /// The CA.
    pub ca: CertificateAuthority,
    /// The records of the join tokens issued (hashed).
    pub tokens: Vec<TokenRecord>,
    /// The members that joined (their credentials hashed).
    pub members: Vec<MemberRecord>,
    /// The folder.
    pub dir: PathBuf,
    /// Whether this start created the files.
    pub created: bool,
}

impl TrustFolder {
    /// Opens the root's trust in `dir`, creating a new deployment CA named `name` and a first
    /// join token for clusters when the folder has none.
    pub fn open_root(dir: &Path, name: &str, now: i64) -> Result<TrustFolder, TrustError> {
        if dir.join("ca.key").exists() {
            return TrustFolder::open(dir);
        }
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let ca = CertificateAuthority::create_root(name, now)?;
        let (token, record) = JoinToken::issue(&ca, "clusters", now, None, None)?;
        let folder = TrustFolder {
            ca,
            tokens: vec![record],
            members: Vec::new(),
            dir: dir.to_path_buf(),
            created: true,
        };
        folder.write_all(&token)?;
        Ok(folder)
    }

    /// Opens the trust of a member CA (a cluster's intermediate) in `dir`: reads it back when
    /// the folder has one, else writes `ca` there with a first join token named `token_name`
    /// for its own members. `ca` comes from the parent at registration.
    pub fn open_or_create(
        dir: &Path,
        ca: impl FnOnce() -> Result<CertificateAuthority, TrustError>,
        token_name: &str,
        now: i64,
    ) -> Result<TrustFolder, TrustError> {
        if dir.join("ca.key").exists() {
            return TrustFolder::open(dir);
        }
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let ca = ca()?;
        let (token, record) = JoinToken::issue(&ca, token_name, now, None, None)?;
        let folder = TrustFolder {
            ca,
            tokens: vec![record],
            members: Vec::new(),
            dir: dir.to_path_buf(),
            created: true,
        };
        folder.write_all(&token)?;
        Ok(folder)
    }

    /// Reads the trust files of `dir`; each problem names its file.
    pub fn open(dir: &Path) -> Result<TrustFolder, TrustError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|e| io_error(&path, &e))
        };
        let stored: Stored = serde_json::from_str(&read("trust.json")?)
            .map_err(|e| file_error(&dir.join("trust.json"), &e.to_string()))?;
        if stored.format > FORMAT {
            let path = dir.join("trust.json");
            let why = format!(
                "format {} is newer than this version reads ({FORMAT})",
                stored.format
            );
            return Err(file_error(&path, &why));
        }
        let key = read("ca.key")?;
        let bundle = read("ca.crt")?;
        let cert_pem = first_certificate(&bundle)
            .ok_or_else(|| file_error(&dir.join("ca.crt"), "holds no certificate"))?;
        let ca = CertificateAuthority::from_parts(
            &stored.name,
            stored.root,
            &key,
            &cert_pem,
            &stored.parents_pem,
            &stored.root_pem,
            stored.not_after,
        )
        .map_err(|e| file_error(&dir.join("ca.key"), &e.to_string()))?;
        let tokens: Vec<TokenRecord> = serde_json::from_str(&read("tokens.json")?)
            .map_err(|e| file_error(&dir.join("tokens.json"), &e.to_string()))?;
        // members.json came later than the other files: a folder without it has no members
        let members: Vec<MemberRecord> = if dir.join("members.json").exists() {
            serde_json::from_str(&read("members.json")?)
                .map_err(|e| file_error(&dir.join("members.json"), &e.to_string()))?
        } else {
            Vec::new()
        };
        Ok(TrustFolder {
            ca,
            tokens,
            members,
            dir: dir.to_path_buf(),
            created: false,
        })
    }

    /// The path of one of its files (`ca.crt`, `join.token`…).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Saves the join tokens' records (after a use or a new token).
    pub(crate) fn save_tokens(&self) -> Result<(), TrustError> {
        let tokens = serde_json::to_string_pretty(&self.tokens).expect("plain data serializes");
        write(&self.path("tokens.json"), &tokens, true)
    }

    /// Saves the members' records.
    pub(crate) fn save_members(&self) -> Result<(), TrustError> {
        let members = serde_json::to_string_pretty(&self.members).expect("plain data serializes");
        write(&self.path("members.json"), &members, true)
    }

    /// Writes every file; `token` goes to `join.token`.
    fn write_all(&self, token: &JoinToken) -> Result<(), TrustError> {
        let stored = Stored {
            format: FORMAT,
            name: self.ca.name().to_string(),
            root: self.ca.is_root(),
            parents_pem: self.ca.parents_pem().to_string(),
            root_pem: self.ca.root_pem().to_string(),
            not_after: self.ca.certificate().not_after,
        };
        let json = serde_json::to_string_pretty(&stored).expect("plain data serializes");
        let tokens = serde_json::to_string_pretty(&self.tokens).expect("plain data serializes");
        write(&self.path("ca.crt"), &self.ca.bundle_pem(), false)?;
        write(&self.path("trust.json"), &json, false)?;
        write(&self.path("ca.key"), &self.ca.certificate().key_pem, true)?;
        write(&self.path("tokens.json"), &tokens, true)?;
        write(&self.path("join.token"), &format!("{token}\n"), true)
    }
}

/// The first PEM certificate block of `bundle`.
fn first_certificate(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = bundle.find("-----BEGIN CERTIFICATE-----")?;
    let end = bundle[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &bundle[start..end]))
}

/// Writes a secret (a token, a credential, a key) to `path` as [`TrustFolder`] writes its own:
/// through a temporary file renamed over it, created with mode 0600, so a crash leaves the
/// old file or the new one and others never read it, not even for a moment.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), TrustError> {
    write(path, text, true)
}

/// Writes `text` to `path` through a temporary file renamed over it, so a crash leaves the
/// old file or the new one, never half of one; a secret's file is created with mode 0600
/// (never readable by others, not even for a moment).
fn write(path: &Path, text: &str, secret: bool) -> Result<(), TrustError> {
    use std::io::Write;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!("{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(|e| io_error(path, &e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| io_error(path, &e))
}

fn io_error(path: &Path, e: &std::io::Error) -> TrustError {
    file_error(path, &e.to_string())
}

fn file_error(path: &Path, why: &str) -> TrustError {
    TrustError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}
