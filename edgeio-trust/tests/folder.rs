//! A root's trust files: made on first start with secrets at mode 0600, read back unchanged on
//! the next, and problems named by file.

use edgeio_trust::{JoinToken, TokenRecord, TrustError, TrustFolder};
use std::os::unix::fs::PermissionsExt;

const NOW: i64 = 1_796_000_000;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_first_start_makes_the_ca_and_a_join_token_and_keeps_secrets_private() {
    let dir = tempfile::tempdir().unwrap();
    let folder = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    assert!(folder.created);
    for secret in ["ca.key", "join.token", "tokens.json"] {
        assert_eq!(mode(&folder.path(secret)), 0o600, "{secret}");
    }
    let text = std::fs::read_to_string(folder.path("join.token")).unwrap();
    assert_eq!(text.lines().count(), 1, "one raw token on one line");
    let token: JoinToken = text.parse().unwrap();
    assert!(token.pins(&folder.ca));
    let stored = std::fs::read_to_string(folder.path("tokens.json")).unwrap();
    assert!(!stored.contains(&token.secret), "tokens are stored hashed");
    let records: Vec<TokenRecord> = serde_json::from_str(&stored).unwrap();
    records[0].check(&token.secret, NOW).unwrap();
    let ca = std::fs::read_to_string(folder.path("ca.crt")).unwrap();
    assert_eq!(ca, folder.ca.root_pem());
}

#[test]
fn a_restart_reads_back_the_same_ca_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let first = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    let token_text = std::fs::read_to_string(first.path("join.token")).unwrap();
    let again = TrustFolder::open_root(dir.path(), "another name", NOW + 60).unwrap();
    assert!(!again.created);
    assert_eq!(again.ca.hash(), first.ca.hash());
    assert_eq!(again.ca.name(), "edgeio deployment");
    assert_eq!(again.tokens, first.tokens);
    assert_eq!(
        std::fs::read_to_string(again.path("join.token")).unwrap(),
        token_text,
        "the token handed out stays valid"
    );
    // the CA read back still signs: its intermediate chains to the same root
    let cluster = again.ca.intermediate("cluster c1", NOW + 60).unwrap();
    assert!(cluster.bundle_pem().ends_with(first.ca.root_pem()));
}

#[test]
fn a_damaged_or_newer_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    std::fs::write(folder.path("ca.key"), "not a key").unwrap();
    match TrustFolder::open(dir.path()) {
        Err(TrustError::File { path, .. }) => assert!(path.ends_with("ca.key"), "{path}"),
        other => panic!("{other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let folder = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    let trust = std::fs::read_to_string(folder.path("trust.json")).unwrap();
    std::fs::write(
        folder.path("trust.json"),
        trust.replace("\"format\": 1", "\"format\": 2"),
    )
    .unwrap();
    match TrustFolder::open(dir.path()) {
        Err(TrustError::File { path, why }) => {
            assert!(path.ends_with("trust.json"), "{path}");
            assert!(why.contains("newer"), "{why}");
        }
        other => panic!("{other:?}"),
    }

    std::fs::remove_file(folder.path("tokens.json")).unwrap();
    std::fs::write(folder.path("trust.json"), trust).unwrap();
    match TrustFolder::open(dir.path()) {
        Err(TrustError::File { path, .. }) => assert!(path.ends_with("tokens.json"), "{path}"),
        other => panic!("{other:?}"),
    }
}
