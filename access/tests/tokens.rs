//! The verifier against a real issuer over HTTP (the development issuer on loopback):
//! every kind of token it must refuse, key rotation, the bound on refetches, the services'
//! client-credentials tokens.

use std::time::Duration;

use access::client::ServiceToken;
use access::{AuthError, ClientSettings, Role, Verifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use dev_issuer::Issuer;
use serde_json::json;

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = Issuer::ephemeral(
        format!("http://{}", listener.local_addr().unwrap()),
        "cleaning-park",
    );
    tokio::spawn(dev_issuer::serve(
        listener,
        issuer.clone(),
        std::future::pending(),
    ));
    issuer
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(issuer: &Issuer) -> serde_json::Value {
    json!({
        "iss": issuer.url(), "aud": "cleaning-park", "sub": "0b7f3c1a-5d2e-4f6a-8b9c-1d2e3f4a5b6c",
        "exp": now() + 300, "iat": now(), "roles": ["customer"],
    })
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

fn invalid(result: Result<access::Principal, AuthError>) -> String {
    match result {
        Err(AuthError::Invalid(why)) => why,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_gives_its_subject_and_roles() {
    let issuer = issuer().await;
    let verifier = Verifier::new(issuer.auth_settings()).unwrap();
    let token = issuer
        .token("cleaner-7", &[Role::Cleaner], Duration::from_secs(60))
        .unwrap();
    let principal = verifier
        .verify_header(Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(principal.subject, "cleaner-7");
    assert_eq!(principal.roles, vec![Role::Cleaner]);
    // Verified once, then remembered: the same token again gives the same principal.
    assert_eq!(verifier.remembered_tokens(), 1);
    assert_eq!(verifier.verify(&token).await.unwrap(), principal);
    assert_eq!(verifier.remembered_tokens(), 1);
    // Keycloak puts realm roles under realm_access; roles this system does not know are ignored.
    let keycloak = issuer
        .sign_claims(&with(
            with(claims(&issuer), "roles", json!(null)),
            "realm_access",
            json!({"roles": ["offline_access", "admin", "default-roles-cleaning-park"]}),
        ))
        .unwrap();
    let principal = verifier.verify(&keycloak).await.unwrap();
    assert_eq!(principal.roles, vec![Role::Admin]);
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_its_reason() {
    let issuer = issuer().await;
    let verifier = Verifier::new(issuer.auth_settings()).unwrap();
    let good = claims(&issuer);
    let sign = |c: serde_json::Value| issuer.sign_claims(&c).unwrap();

    assert_eq!(verifier.verify_header(None).await, Err(AuthError::Missing));
    assert_eq!(
        verifier.verify_header(Some("Basic dXNlcjpwYXNz")).await,
        Err(AuthError::Missing)
    );
    let why = invalid(
        verifier
            .verify(&sign(with(good.clone(), "exp", json!(now() - 3600))))
            .await,
    );
    assert_eq!(why, "the token has expired");
    let why = invalid(
        verifier
            .verify(&sign(with(good.clone(), "nbf", json!(now() + 3600))))
            .await,
    );
    assert_eq!(why, "the token is not valid yet");
    let why = invalid(
        verifier
            .verify(&sign(with(
                good.clone(),
                "iss",
                json!("http://evil.example"),
            )))
            .await,
    );
    assert_eq!(why, "the token is from another issuer");
    let why = invalid(
        verifier
            .verify(&sign(with(good.clone(), "aud", json!("another-api"))))
            .await,
    );
    assert_eq!(why, "the token is meant for another audience");
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let why = invalid(verifier.verify(&sign(no_sub)).await);
    assert_eq!(why, "the token has no \"sub\" claim");

    // alg none: a token anyone can make.
    let part = |v: serde_json::Value| B64.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        part(json!({"alg": "none", "typ": "JWT"})),
        part(good.clone())
    );
    let why = invalid(verifier.verify(&none).await);
    assert!(why.contains("\"none\" is not accepted"), "{why}");

    // Algorithm confusion: HMAC keyed with the issuer's public key material.
    let jwk = &issuer.jwks()["keys"][0];
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = jwk["kid"].as_str().map(String::from);
    let secret =
        jsonwebtoken::EncodingKey::from_secret(jwk["x"].as_str().unwrap().as_bytes()).unwrap();
    let confused = jsonwebtoken::encode(&header, &good, &secret).unwrap();
    let why = invalid(verifier.verify(&confused).await);
    assert!(why.contains("\"HS256\" is not accepted"), "{why}");

    // A key the issuer never published (same issuer URL, another key).
    let impostor = Issuer::ephemeral(issuer.url(), "cleaning-park");
    let why = invalid(verifier.verify(&impostor.sign_claims(&good).unwrap()).await);
    assert_eq!(why, "the token is signed with an unknown key");

    // A published key id over a signature that does not verify.
    let token = sign(good.clone());
    let (body, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{body}.{}", B64.encode([7u8; 64]));
    let why = invalid(verifier.verify(&forged).await);
    assert_eq!(why, "the token's signature does not verify");

    // Only tokens that verified are remembered.
    assert_eq!(verifier.remembered_tokens(), 0);

    for garbage in ["", "abc", "a.b.c", "a.b.c.d", "....."] {
        invalid(verifier.verify(garbage).await);
    }
    let huge = format!("{}.{}.x", part(json!({"alg": "ES256"})), "A".repeat(9000));
    let why = invalid(verifier.verify(&huge).await);
    assert!(why.contains("longer than"), "{why}");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_without_a_restart_and_refetches_are_bounded() {
    let issuer = issuer().await;
    let verifier =
        Verifier::with_refetch_interval(issuer.auth_settings(), Duration::from_millis(300))
            .unwrap();
    let first = issuer
        .token("admin-1", &[Role::Admin], Duration::from_secs(60))
        .unwrap();
    verifier.verify(&first).await.unwrap();
    assert_eq!(verifier.key_fetches(), 1);

    // A flood of tokens with unknown keys, all at once: at most one more fetch.
    let impostor = Issuer::ephemeral(issuer.url(), "cleaning-park");
    let forged = impostor.sign_claims(&claims(&issuer)).unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let (verifier, forged) = (verifier.clone(), forged.clone());
            tokio::spawn(async move { verifier.verify(&forged).await })
        })
        .collect();
    for attempt in attempts {
        assert!(matches!(attempt.await.unwrap(), Err(AuthError::Invalid(_))));
    }
    assert_eq!(verifier.key_fetches(), 2, "one fetch for the whole flood");
    // Within the interval, no fetch at all.
    verifier.verify(&forged).await.unwrap_err();
    assert_eq!(verifier.key_fetches(), 2);

    // The issuer rotates: the new key is found by one fetch, the old token still verifies.
    issuer.rotate().unwrap();
    let second = issuer
        .token("admin-1", &[Role::Admin], Duration::from_secs(60))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    verifier.verify(&second).await.unwrap();
    verifier.verify(&first).await.unwrap();
    assert_eq!(verifier.key_fetches(), 3);
}

#[tokio::test]
async fn the_services_get_tokens_by_client_credentials() {
    let issuer = issuer().await;
    let verifier = Verifier::new(issuer.auth_settings()).unwrap();
    let service = ServiceToken::new(issuer.auth_settings(), issuer.service_client()).unwrap();
    let token = service.token().await.unwrap();
    assert_eq!(service.token().await.unwrap(), token, "cached while valid");
    let principal = verifier.verify(&token).await.unwrap();
    assert_eq!(principal.roles, vec![Role::Service]);
    assert_eq!(principal.subject, "cleaning-park-services");

    let wrong = ServiceToken::new(
        issuer.auth_settings(),
        ClientSettings {
            client_id: "cleaning-park-services".into(),
            client_secret: "guessed".into(),
        },
    )
    .unwrap();
    match wrong.token().await {
        Err(AuthError::Unavailable(why)) => assert!(why.contains("invalid_client"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_issuer_means_tokens_cannot_be_checked() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let issuer = Issuer::ephemeral(url, "cleaning-park");
    let verifier = Verifier::new(issuer.auth_settings()).unwrap();
    let token = issuer
        .token("admin-1", &[Role::Admin], Duration::from_secs(60))
        .unwrap();
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
}
