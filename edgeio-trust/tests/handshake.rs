//! The certificates and tokens of `edgeio-trust` against a real TLS stack: a rustls client and
//! server (ring provider) complete a handshake in memory, or refuse it for the right reason.

use edgeio_trust::{CertificateAuthority, Issued, JoinToken, TrustError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::sync::Arc;

const NOW: i64 = 1_796_000_000;

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A handshake to `name` with a server presenting `server`, from a client that trusts
/// `root_der` only. Returns the chain the client was shown.
fn handshake(
    server: &Issued,
    root_der: &[u8],
    name: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
    let provider = edgeio_trust::tls::provider();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("a PEM key");
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(&server.chain_pem), key)?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(root_der.to_vec()))?;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).expect("a server name");
    let mut client = ClientConnection::new(Arc::new(client_config), name)?;
    let mut server = ServerConnection::new(Arc::new(server_config))?;
    for _ in 0..10 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).expect("to memory");
        server.read_tls(&mut &wire[..]).expect("from memory");
        server.process_new_packets()?;
        let mut wire = Vec::new();
        server.write_tls(&mut wire).expect("to memory");
        client.read_tls(&mut &wire[..]).expect("from memory");
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            let shown = client.peer_certificates().unwrap_or_default();
            return Ok(shown.iter().map(|c| c.clone().into_owned()).collect());
        }
    }
    panic!("the handshake did not finish in 10 rounds");
}

#[test]
fn a_server_certificate_from_the_root_verifies_for_its_names_and_addresses_only() {
    let root = CertificateAuthority::create_root("edgeio deployment", NOW).unwrap();
    let names = vec!["root.example".to_string(), "10.1.2.3".to_string()];
    let server = root.issue_server(&names, NOW).unwrap();
    handshake(&server, root.root_der(), "root.example").unwrap();
    handshake(&server, root.root_der(), "10.1.2.3").unwrap();
    let err = handshake(&server, root.root_der(), "other.example").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
        ),
        "{err:?}"
    );
}

#[test]
fn a_clusters_server_verifies_through_its_intermediate_to_the_one_root() {
    let root = CertificateAuthority::create_root("edgeio deployment", NOW).unwrap();
    let cluster = root.intermediate("cluster c1", NOW).unwrap();
    let server = cluster.issue_server(&["c1.example".into()], NOW).unwrap();
    let shown = handshake(&server, root.root_der(), "c1.example").unwrap();
    assert_eq!(shown.len(), 2, "the leaf and the cluster's CA");
    // what the cluster's members keep as ca.crt: its CA, then the root
    assert!(cluster.bundle_pem().ends_with(root.root_pem()));
    assert_eq!(certs(&cluster.bundle_pem()).len(), 2);
    // a cluster's CA may issue end certificates only: a CA under it is not trusted
    let sub = cluster.intermediate("under c1", NOW).unwrap();
    let server = sub.issue_server(&["sub.example".into()], NOW).unwrap();
    let err = handshake(&server, root.root_der(), "sub.example").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn another_deployments_certificate_is_refused() {
    let ours = CertificateAuthority::create_root("ours", NOW).unwrap();
    let theirs = CertificateAuthority::create_root("theirs", NOW).unwrap();
    let server = theirs.issue_server(&["root.example".into()], NOW).unwrap();
    let err = handshake(&server, ours.root_der(), "root.example").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn a_join_token_pins_the_ca_its_parent_presents_and_no_other() {
    let root = CertificateAuthority::create_root("edgeio deployment", NOW).unwrap();
    let cluster = root.intermediate("cluster c1", NOW).unwrap();
    let server = cluster.issue_server(&["c1.example".into()], NOW).unwrap();
    let shown = handshake(&server, root.root_der(), "c1.example").unwrap();
    let shown: Vec<&[u8]> = shown.iter().map(|c| c.as_ref()).collect();

    let (token, record) = JoinToken::issue(&cluster, "workers of c1", NOW, None, None).unwrap();
    let held: JoinToken = token.to_string().parse().unwrap();
    assert_eq!(held, token);
    assert!(
        held.pins_any(&shown),
        "the cluster's CA is in the chain it presents"
    );
    record.check(&held.secret, NOW).unwrap();

    let impostor = CertificateAuthority::create_root("impostor", NOW).unwrap();
    let (other, _) = JoinToken::issue(&impostor, "x", NOW, None, None).unwrap();
    assert!(!other.pins_any(&shown));
    assert!(!held.pins(&impostor));
}

#[test]
fn a_token_is_refused_when_wrong_expired_or_used_up_and_its_record_holds_no_secret() {
    let ca = CertificateAuthority::create_root("edgeio deployment", NOW).unwrap();
    let (token, mut record) =
        JoinToken::issue(&ca, "one worker", NOW, Some(3600), Some(1)).unwrap();
    let wrong = "a".repeat(32);
    assert_eq!(
        record.check(&wrong, NOW),
        Err(TrustError::Refused {
            id: token.id.clone()
        })
    );
    assert_eq!(
        record.check(&token.secret, NOW + 3600),
        Err(TrustError::Expired {
            id: token.id.clone()
        })
    );
    record.spend(&token.secret, NOW).unwrap();
    assert_eq!(
        record.spend(&token.secret, NOW),
        Err(TrustError::UsedUp {
            id: token.id.clone()
        })
    );
    let stored = serde_json::to_string(&record).unwrap();
    assert!(!stored.contains(&token.secret), "{stored}");
    assert!(!format!("{token:?}").contains(&token.secret));
}

#[test]
fn malformed_tokens_and_names_are_refused_naming_the_part() {
    let ca = CertificateAuthority::create_root("edgeio deployment", NOW).unwrap();
    let (token, _) = JoinToken::issue(&ca, "x", NOW, None, None).unwrap();
    let good = token.to_string();
    let cases = [
        ("", "token"),
        ("edgeio1.abc", "token"),
        (&good.replacen("edgeio1", "edgeio2", 1), "prefix"),
        (&good.replacen(&token.id, "ABCDEFGH", 1), "id"),
        (&good.replacen(&token.secret, "short", 1), "secret"),
        (&format!("{}0", &good), "ca hash"),
        (&format!("{}zz", &good[..good.len() - 2]), "ca hash"),
    ];
    for (text, part) in cases {
        match text.parse::<JoinToken>() {
            Err(TrustError::Malformed { part: p, .. }) => assert_eq!(p, part, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    for bad in ["", "bad name!", "-lead.example", &"a".repeat(64)] {
        let names = if bad.is_empty() {
            vec![]
        } else {
            vec![bad.to_string()]
        };
        match ca.issue_server(&names, NOW) {
            Err(TrustError::Name { .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn a_ca_read_back_from_its_folder_issues_certificates_the_deployment_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let first = edgeio_trust::TrustFolder::open_root(dir.path(), "edgeio deployment", NOW).unwrap();
    let again = edgeio_trust::TrustFolder::open(dir.path()).unwrap();
    let server = again
        .ca
        .issue_server(&["root.example".into()], NOW)
        .unwrap();
    handshake(&server, first.ca.root_der(), "root.example").unwrap();
}
