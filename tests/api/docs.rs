//! Health, the OpenAPI document, the docs page and the discovery documents.

use lambent::routes::ROUTES;
use serde_json::Value;

use crate::app::TestApp;

#[tokio::test]
async fn health_reports_status_and_version() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/health")).send().await.expect("r");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_docs_page_renders_it() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for spec in ROUTES.iter() {
        let operation = &doc["paths"][spec.path][spec.method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            spec.method,
            spec.path
        );
        assert_eq!(
            operation["security"].is_array(),
            spec.authorized,
            "{} {} security",
            spec.method,
            spec.path
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let page = app.client.get(app.url("/docs")).send().await.expect("r");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(page.text().await.expect("text").contains("openapi.json"));
}

#[tokio::test]
async fn discovery_points_at_the_keys_that_verify_access_tokens() {
    let app = TestApp::spawn().await;
    let registered = app.register("keys@example.com", "keys").await;
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], app.base.as_str());
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .client
        .get(jwks_uri)
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("jwks");

    let token = registered["access_token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("the token's key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[app.base.as_str()]);
    validation.set_audience(&["lambent"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies with the published key")
    .claims;
    assert_eq!(claims["sub"], registered["user"]["id"]);
    assert!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat") <= 900);
}
