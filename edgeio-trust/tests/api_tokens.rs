//! API tokens in a store: issued once, proved by their secret, refused when revoked, expired,
//! malformed or unknown, and never kept in clear.

use edgeio_core::auth::{AuthError, Caller, NewToken, Role, TokenAuthority, TokenKind};
use edgeio_core::clock::ManualClock;
use edgeio_core::store::Store;
use edgeio_core::testing::MemoryStore;
use edgeio_trust::{ApiTokens, API_TOKENS_KEY};
use std::sync::Arc;

fn tokens() -> (ApiTokens, Arc<MemoryStore>, Arc<ManualClock>) {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(1_796_000_000_000));
    (ApiTokens::new(store.clone(), clock.clone()), store, clock)
}

fn admin() -> Caller {
    Caller {
        token_id: "adminid1".into(),
        name: "admin".into(),
        role: Role::Admin,
    }
}

fn new(role: Role, ttl_s: Option<u64>) -> NewToken {
    NewToken {
        role,
        name: Some("ci-bot".into()),
        ttl_s,
    }
}

#[tokio::test]
async fn an_issued_token_proves_its_caller_and_the_store_keeps_no_secret() {
    let (tokens, store, _) = tokens();
    let issued = tokens
        .create(&admin(), new(Role::Operator, None))
        .await
        .unwrap();
    let caller = tokens.authenticate(&issued.token).await.unwrap();
    assert_eq!(caller.role, Role::Operator);
    assert_eq!(caller.token_id, issued.view.id);
    assert_eq!(caller.name, "ci-bot");
    assert_eq!(issued.view.created_by, "adminid1");

    let secret = issued.token.rsplit('.').next().unwrap();
    let listing = store.list(API_TOKENS_KEY).await.unwrap();
    assert_eq!(listing.items.len(), 1);
    let kept = String::from_utf8(listing.items[0].value.to_vec()).unwrap();
    assert!(!kept.contains(secret), "the store holds the secret: {kept}");

    let listed = tokens.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].kind,
        TokenKind::Api {
            role: Role::Operator
        }
    );
    assert!(!serde_json::to_string(&listed).unwrap().contains(secret));
}

#[tokio::test]
async fn a_wrong_secret_a_malformed_or_join_token_and_a_revoked_one_prove_nobody() {
    let (tokens, _, _) = tokens();
    let issued = tokens
        .create(&admin(), new(Role::Viewer, None))
        .await
        .unwrap();
    let id = issued.view.id.clone();
    let wrong = format!("edgeioapi1.{id}.{}", "a".repeat(32));
    assert_eq!(
        tokens.authenticate(&wrong).await,
        Err(AuthError::Unknown { id: id.clone() })
    );
    for bad in [
        "",
        "Bearer x",
        "edgeioapi1.short.secret",
        "edgeioapi1.a.b.c",
    ] {
        assert!(
            matches!(
                tokens.authenticate(bad).await,
                Err(AuthError::Malformed { .. })
            ),
            "{bad:?}"
        );
    }
    let join = format!("edgeio1.{id}.{}.sha256:00", "a".repeat(32));
    let e = tokens.authenticate(&join).await.unwrap_err().to_string();
    assert!(e.contains("join token"), "{e}");

    let revoked = tokens.revoke(&admin(), &id).await.unwrap();
    assert_eq!(revoked.id, id);
    assert_eq!(
        tokens.authenticate(&issued.token).await,
        Err(AuthError::Unknown { id: id.clone() })
    );
    assert!(tokens.list().await.unwrap().is_empty());
    let again = tokens.revoke(&admin(), &id).await.unwrap_err().to_string();
    assert!(
        again.contains(&id) && again.contains("not found"),
        "{again}"
    );
}

#[tokio::test]
async fn a_token_with_a_ttl_expires_on_time() {
    let (tokens, _, clock) = tokens();
    let issued = tokens
        .create(&admin(), new(Role::Viewer, Some(60)))
        .await
        .unwrap();
    assert_eq!(issued.view.expires, Some(issued.view.created + 60));
    clock.advance_ms(59_000);
    assert!(tokens.authenticate(&issued.token).await.is_ok());
    clock.advance_ms(1_000);
    let e = tokens.authenticate(&issued.token).await.unwrap_err();
    assert!(matches!(e, AuthError::Expired { .. }), "{e}");
}

#[tokio::test]
async fn bad_names_and_ttls_are_refused_naming_the_field() {
    let (tokens, _, _) = tokens();
    for (request, field) in [
        (
            NewToken {
                role: Role::Viewer,
                name: Some("has space".into()),
                ttl_s: None,
            },
            "name",
        ),
        (
            NewToken {
                role: Role::Viewer,
                name: Some("x".repeat(65)),
                ttl_s: None,
            },
            "name",
        ),
        (new(Role::Viewer, Some(0)), "ttl_s"),
        (new(Role::Viewer, Some(u64::MAX)), "ttl_s"),
    ] {
        let e = tokens.create(&admin(), request).await.unwrap_err();
        assert_eq!(e.details()[0].path, field, "{e}");
    }
    assert!(
        tokens.list().await.unwrap().is_empty(),
        "nothing half-created"
    );
}

#[tokio::test]
async fn the_first_admin_token_is_made_once() {
    let (tokens, _, _) = tokens();
    let first = tokens.bootstrap_admin().await.unwrap().expect("issued");
    assert_eq!(first.view.kind, TokenKind::Api { role: Role::Admin });
    assert_eq!(first.view.created_by, "bootstrap");
    assert!(tokens.bootstrap_admin().await.unwrap().is_none());
    assert_eq!(
        tokens.authenticate(&first.token).await.unwrap().role,
        Role::Admin
    );
}
