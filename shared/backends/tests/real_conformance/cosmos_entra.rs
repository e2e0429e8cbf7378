//! Cosmos DB with Entra ID workload identity (a module of `real_conformance`). The Cosmos DB test
//! server (`scripts/cosmos-launcher.js`) is also a minimal Entra ID token endpoint: it issues
//! tokens for a federated assertion, answers 401 to an AAD-authorized request whose token it did
//! not issue, and counts what it saw (`GET /__test/auth`) per database and per client id, so each
//! test reads its own counts while the other suites use the same server with the key.

use super::*;
use iotstream_backends::conformance::store::reading;
use iotstream_backends::cosmos::CosmosStore;
use iotstream_core::ports::TelemetryStore;
use iotstream_core::{PortErrorKind, Ts};
use serde_json::Value;
use std::io::Write as _;
use std::time::Duration;

/// The scope azure_data_cosmos asks tokens for, whatever the account.
const COSMOS_SCOPE: &str = "https://cosmos.azure.com/.default";

fn store_url() -> String {
    service("IOTSTREAM_TEST_TELEMETRY_STORE_URL")
}

/// The launcher's own https:// URL (the Entra ID authority host of these tests).
fn launcher() -> String {
    iotstream_backends::cosmos::endpoint_of(&store_url())
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// A client that trusts the test server's self-signed certificate (`SSL_CERT_FILE`).
fn http() -> reqwest::Client {
    let pem = std::fs::read(service("SSL_CERT_FILE")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What the launcher saw: `requests`, `databases.<id>` and `clients.<client id>`.
async fn seen() -> Value {
    let res = http()
        .get(format!("{}/__test/auth", launcher()))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "GET /__test/auth: {}", res.status());
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

fn count(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Creates the database and its container with the key (the Entra ID path does not create them).
async fn provision(database: &str) {
    let urls = BackendUrls {
        settings: [
            (
                "IOTSTREAM_COSMOS_KEY".to_owned(),
                service("IOTSTREAM_TEST_COSMOS_KEY"),
            ),
            ("IOTSTREAM_COSMOS_DATABASE".to_owned(), database.to_owned()),
        ]
        .into(),
        ..BackendUrls::default()
    };
    CosmosStore::connect(&store_url(), &urls).await.unwrap();
}

/// Settings for workload identity as AKS's webhook would set them, with no key.
fn workload_identity(database: &str, token_file: &std::path::Path, client_id: &str) -> BackendUrls {
    BackendUrls {
        settings: [
            ("IOTSTREAM_COSMOS_DATABASE", database.to_owned()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
            ("AZURE_CLIENT_ID", client_id.to_owned()),
            ("AZURE_TENANT_ID", unique("tenant")),
            ("AZURE_AUTHORITY_HOST", launcher()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        ..BackendUrls::default()
    }
}

fn token_file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_writes_and_reads_with_a_token_from_the_authority() {
    let database = unique("entra");
    provision(&database).await;
    let before = seen().await;
    let key_before = count(&before, &format!("/databases/{database}/key"));
    assert!(key_before > 0, "provisioning used the key: {before}");

    let client_id = unique("client");
    // A service account token as Kubernetes projects it (no trailing newline).
    let assertion = token_file("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln");
    let urls = workload_identity(&database, assertion.path(), &client_id);
    let store = CosmosStore::connect(&store_url(), &urls).await.unwrap();

    let device = unique_device("entra");
    let written = [reading(&device, 1_000, 20.5), reading(&device, 2_000, 21.5)];
    assert_eq!(store.put(&written).await.unwrap(), vec![true, true]);
    assert_eq!(store.put(&written[..1]).await.unwrap(), vec![false], "idempotent");
    let ids: Vec<_> = written
        .iter()
        .map(|r| (device.clone(), r.id.clone()))
        .chain([(device.clone(), "never-written".to_owned())])
        .collect();
    assert_eq!(store.contains(&ids).await.unwrap(), vec![true, true, false]);
    let got = store.range(&device, Ts(0), Ts(1_500), 10).await.unwrap();
    assert_eq!(got, written[..1].to_vec(), "the readings of [0, 1500)");

    let after = seen().await;
    let db = |kind: &str| count(&after, &format!("/databases/{database}/{kind}"));
    assert!(
        db("aad") >= 5,
        "puts, contains and range authorized with a token: {after}"
    );
    assert_eq!(
        db("rejected"),
        0,
        "every token was one the authority issued: {after}"
    );
    assert_eq!(
        db("key"),
        key_before,
        "no key-signed request once on Entra ID: {after}"
    );
    let client = &after["clients"][client_id.as_str()];
    assert_eq!(client["tenant"], urls.settings["AZURE_TENANT_ID"], "{after}");
    assert_eq!(client["scopes"], serde_json::json!([COSMOS_SCOPE]), "{after}");
    // The SDK caches the token (valid for an hour): one request, however many operations.
    assert_eq!(count(client, "/issued"), 1, "{after}");
    assert_eq!(count(client, "/refused"), 0, "{after}");
}

#[tokio::test]
async fn the_server_refuses_a_token_it_did_not_issue() {
    let database = unique("entra-forged");
    let res = http()
        .get(format!("{}/dbs/{database}", launcher()))
        .header("authorization", "type%3Daad%26ver%3D1.0%26sig%3Daad-forged")
        .header("x-ms-date", "Thu, 01 Jan 2026 00:00:00 GMT")
        .header("x-ms-version", "2020-07-15")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    let after = seen().await;
    assert_eq!(
        count(&after, &format!("/databases/{database}/rejected")),
        1,
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_federated_token_is_a_clear_config_error() {
    let database = unique("entra-refused");
    provision(&database).await;
    let client_id = unique("client");
    // An empty projected token: Entra ID answers 401 invalid_client.
    let assertion = token_file("");
    let urls = workload_identity(&database, assertion.path(), &client_id);
    let err = tokio::time::timeout(Duration::from_secs(60), async {
        let store = CosmosStore::connect(&store_url(), &urls).await?;
        store.put(&[reading(&unique_device("entra"), 1_000, 1.0)]).await
    })
    .await
    .expect("a refused token fails, it does not hang")
    .unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Config, "{err}");
    for part in ["cosmos db", "WorkloadIdentityCredential", "AADSTS50027"] {
        assert!(err.message.contains(part), "{part:?} missing from: {err}");
    }
    let after = seen().await;
    let client = &after["clients"][client_id.as_str()];
    assert!(count(client, "/refused") >= 1, "the authority was asked: {after}");
    assert_eq!(count(client, "/issued"), 0, "{after}");
    assert_eq!(count(&after, &format!("/databases/{database}/aad")), 0, "{after}");
}

#[tokio::test]
async fn a_missing_federated_token_file_is_a_config_error_naming_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let missing = dir.path().join("no-such-token");
    let urls = workload_identity(&unique("entra-missing"), &missing, &unique("client"));
    let err = CosmosStore::connect(&store_url(), &urls).await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Config, "{err}");
    assert!(err.message.contains("no-such-token"), "{err}");
}
