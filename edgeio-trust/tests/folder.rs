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

#[test]
fn a_join_token_admits_a_member_whose_credential_outlives_the_token_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut folder = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    let limited = folder
        .issue_join_token("one cluster", NOW, Some(600), Some(1))
        .unwrap();
    let token_id = folder.spend_join_token(&limited.to_string(), NOW).unwrap();
    assert_eq!(token_id, limited.id);
    // used up, and saved so: a restart does not give the use back
    let reopened = TrustFolder::open(dir.path()).unwrap();
    let mut folder = reopened;
    assert!(matches!(
        folder.spend_join_token(&limited.to_string(), NOW),
        Err(TrustError::UsedUp { .. })
    ));
    let credential = folder.admit("c1", "cluster", &token_id, NOW).unwrap();
    assert!(credential.starts_with("edgeiocred1."));
    let stored = std::fs::read_to_string(folder.path("members.json")).unwrap();
    assert!(!stored.contains(credential.trim_start_matches("edgeiocred1.")));
    assert_eq!(mode(&folder.path("members.json")), 0o600);

    let folder = TrustFolder::open(dir.path()).unwrap();
    folder.recognise("c1", &credential).unwrap();
    assert!(matches!(
        folder.recognise("c2", &credential),
        Err(TrustError::Refused { .. })
    ));
    let other = format!("edgeiocred1.{}", "a".repeat(40));
    assert!(matches!(
        folder.recognise("c1", &other),
        Err(TrustError::Refused { .. })
    ));
    assert!(matches!(
        folder.recognise("c1", "garbage"),
        Err(TrustError::Malformed { .. })
    ));
    let mut folder = folder;
    assert!(folder.remove_member("c1").unwrap());
    assert!(!folder.remove_member("c1").unwrap());
    let folder = TrustFolder::open(dir.path()).unwrap();
    assert!(
        folder.recognise("c1", &credential).is_err(),
        "removed for good"
    );
}

#[test]
fn a_token_of_another_ca_or_expired_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut folder = TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = TrustFolder::open_root(other_dir.path(), "elsewhere", NOW).unwrap();
    let foreign = other.issue_join_token("x", NOW, None, None).unwrap();
    assert!(matches!(
        folder.spend_join_token(&foreign.to_string(), NOW),
        Err(TrustError::Refused { .. })
    ));
    let short = folder.issue_join_token("x", NOW, Some(60), None).unwrap();
    assert!(matches!(
        folder.spend_join_token(&short.to_string(), NOW + 61),
        Err(TrustError::Expired { .. })
    ));
    assert!(matches!(
        folder.spend_join_token("edgeio1.nonsense", NOW),
        Err(TrustError::Malformed { .. })
    ));
}

#[test]
fn a_cluster_folder_is_made_from_the_ca_its_parent_issued_and_read_back() {
    let root_dir = tempfile::tempdir().unwrap();
    let root = TrustFolder::open_root(root_dir.path(), "edgeio deployment", NOW).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TrustFolder::open_or_create(
        dir.path(),
        || root.ca.intermediate("cluster c1", NOW),
        "workers",
        NOW,
    )
    .unwrap();
    assert!(cluster.created && !cluster.ca.is_root());
    let token: JoinToken = std::fs::read_to_string(cluster.path("join.token"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        token.pins(&cluster.ca),
        "its workers' token pins the cluster's CA"
    );
    let again =
        TrustFolder::open_or_create(dir.path(), || panic!("not asked again"), "workers", NOW)
            .unwrap();
    assert_eq!(again.ca.hash(), cluster.ca.hash());
    assert!(again.ca.bundle_pem().ends_with(root.ca.root_pem()));
}
