//! Cosmos DB with Entra ID through a managed identity, end to end: the real binary, with no
//! account key, takes its tokens from the managed identity endpoint of the Cosmos DB test server
//! (`GET /msi/token` of `scripts/cosmos-launcher.js`), given to it the way App Service, Azure
//! Functions and Container Apps give it to a process: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
//! in its environment (azure_identity reads them from there only, so only the child has them).
//! The server accepts an Entra ID request only with a token it issued and counts requests by
//! authorization type (`GET /__test/auth`). IMDS (169.254.169.254, what VMs and AKS nodes
//! offer) cannot be reached here and is not tested.
//!
//! Needs `scripts/services` (run by `scripts/test`); a missing service FAILS the test.
#![cfg(all(
    feature = "integration",
    feature = "kafka",
    feature = "postgres",
    feature = "redis",
    feature = "cosmos"
))]

mod common;

use common::real::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The resource azure_identity asks a managed identity endpoint for (Cosmos DB's scope without
/// `/.default`).
const RESOURCE: &str = "https://cosmos.azure.com";

/// A client that trusts the Cosmos DB test server's certificate (`SSL_CERT_FILE`).
fn https() -> reqwest::Client {
    let pem = std::fs::read(need("SSL_CERT_FILE")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What the Cosmos DB test server saw: `databases.<id>.<auth type>` and
/// `managedIdentity.<client id or "system">`.
async fn seen() -> Value {
    let endpoint =
        iotstream_backends::cosmos::endpoint_of(&need("IOTSTREAM_TEST_TELEMETRY_STORE_URL")).unwrap();
    let res = https()
        .get(format!("{endpoint}__test/auth"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "GET /__test/auth: {}", res.status());
    res.json().await.unwrap()
}

fn count(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// A store on `database` with the account key (as an operator with the key would use it).
async fn key_store(database: &str) -> iotstream_backends::cosmos::CosmosStore {
    let urls = iotstream_backends::BackendUrls {
        settings: [
            (
                "IOTSTREAM_COSMOS_KEY".to_owned(),
                need("IOTSTREAM_TEST_COSMOS_KEY"),
            ),
            ("IOTSTREAM_COSMOS_DATABASE".to_owned(), database.to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    iotstream_backends::cosmos::CosmosStore::connect(&need("IOTSTREAM_TEST_TELEMETRY_STORE_URL"), &urls)
        .await
        .unwrap()
}

/// A test's settings for a binary on a managed identity: a Cosmos DB database of its own,
/// created with the key (with Entra ID the binary does not create it, like the infrastructure
/// would), no key and no workload identity (blank settings are unset), and the managed identity
/// endpoint with `secret` as `IDENTITY_HEADER`; with `user_assigned`, a client id of its own in
/// `IOTSTREAM_COSMOS_CLIENT_ID`.
async fn managed_identity_env(name: &str, secret: &str, user_assigned: bool) -> (RealEnv, String) {
    let mut env = RealEnv::new(name);
    let database = format!("e2e-{}", env.tag);
    key_store(&database).await;
    env.set("IOTSTREAM_COSMOS_DATABASE", database.clone());
    env.set("IOTSTREAM_COSMOS_KEY", String::new());
    env.set("AZURE_FEDERATED_TOKEN_FILE", String::new());
    env.set("IDENTITY_ENDPOINT", need("IOTSTREAM_TEST_IDENTITY_ENDPOINT"));
    env.set("IDENTITY_HEADER", secret.to_owned());
    if user_assigned {
        env.set("IOTSTREAM_COSMOS_CLIENT_ID", format!("client-{}", env.tag));
    }
    (env, database)
}

/// Where `GET /__test/auth` counts the token requests of the test's identity: by its client id,
/// or `system`.
fn identity(env: &RealEnv) -> String {
    let client_id = env
        .env()
        .into_iter()
        .find_map(|(k, v)| (k == "IOTSTREAM_COSMOS_CLIENT_ID").then_some(v));
    format!("/managedIdentity/{}", client_id.unwrap_or("system"))
}

/// Posts readings to a binary on a managed identity, reads them back through its API, and checks
/// that every Cosmos DB request of the database was authorized with a token from the endpoint:
/// one token request (cached for its hour), for Cosmos DB, as the identity (its client id, or
/// `system`), and no key-signed request.
async fn stores_readings_with_a_managed_identity(name: &str, user_assigned: bool) {
    let (env, database) =
        managed_identity_env(name, &need("IOTSTREAM_TEST_IDENTITY_HEADER"), user_assigned).await;
    let identity = identity(&env);
    let db = |v: &Value, kind: &str| count(v, &format!("/databases/{database}/{kind}"));
    let before = seen().await;
    assert!(
        db(&before, "key") > 0,
        "the database was created with the key: {before}"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], None, &env.env()).await;
    assert_eq!(server.readyz().await, 200, "ready: the store answers");
    let device = env.device("mi");
    let token = env.provision(dir.path(), &device);
    let now = iotstream_core::Ts::from_datetime(time::OffsetDateTime::now_utc()).millis();
    let readings: Vec<Value> = (0..10)
        .map(|i| json!({"deviceId": device, "ts": now - 10_000 + i * 1000, "metrics": {"temperature": 20.0 + i as f64}, "id": format!("m{i}")}))
        .collect();
    assert_eq!(
        post(&server.client, &server.url, &token, &json!(readings)).await,
        202
    );
    let got = server.get(&format!("/api/devices/{device}/readings")).await;
    assert_eq!(got["readings"].as_array().map(Vec::len), Some(10), "{got}");
    assert_eq!(got["readings"][9]["metrics"]["temperature"], json!(29.0), "{got}");

    let after = seen().await;
    assert!(
        db(&after, "aad") >= 3,
        "readiness, the writes and the read authorized with a token: {after}"
    );
    assert_eq!(
        db(&after, "rejected"),
        0,
        "every token was the endpoint's: {after}"
    );
    assert_eq!(
        db(&after, "key"),
        db(&before, "key"),
        "no key-signed request: {after}"
    );
    let issued = count(&after, &format!("{identity}/issued")) - count(&before, &format!("{identity}/issued"));
    assert_eq!(issued, 1, "one token for the process, cached: {after}");
    assert_eq!(
        count(&after, &format!("{identity}/refused")),
        count(&before, &format!("{identity}/refused")),
        "{after}"
    );
    assert_eq!(
        after.pointer(&format!("{identity}/resources")),
        Some(&json!([RESOURCE])),
        "{after}"
    );

    // The documents are in the database, as the key sees them.
    let id = iotstream_core::DeviceId::parse(&device).unwrap();
    let stored = iotstream_core::ports::TelemetryStore::range(
        &key_store(&database).await,
        &id,
        iotstream_core::Ts(0),
        iotstream_core::Ts(now + 1),
        100,
    )
    .await
    .unwrap();
    assert_eq!(stored.len(), 10, "every reading is in Cosmos DB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_system_assigned_managed_identity_stores_the_readings() {
    stores_readings_with_a_managed_identity("mi-system", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_assigned_managed_identity_is_asked_for_by_its_client_id() {
    stores_readings_with_a_managed_identity("mi-user", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_identity_header_fails_the_start_naming_the_credential() {
    let wrong = "not-the-identity-header";
    let (env, database) = managed_identity_env("mi-refused", wrong, true).await;
    let identity = identity(&env);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("IOTSTREAM_ADMIN_TOKEN", ADMIN)
        .envs(env.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The endpoint's 401 is not retried: the start fails at once (within a second here).
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after 30 s: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the start fails: {stderr}");
    for part in [
        "cannot open the backends",
        "cosmos db connect (status 401)",
        "ManagedIdentityCredential",
        "X-IDENTITY-HEADER header is not valid",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
    assert!(!stderr.contains(wrong), "the secret is not logged: {stderr}");
    let after = seen().await;
    assert!(
        count(&after, &format!("{identity}/refused")) >= 1,
        "the endpoint was asked: {after}"
    );
    assert_eq!(count(&after, &format!("{identity}/issued")), 0, "{after}");
    assert_eq!(count(&after, &format!("/databases/{database}/aad")), 0, "{after}");
}
