//! `CosmosStore`: the [`TelemetryStore`] on Azure Cosmos DB for NoSQL (cargo feature `cosmos`,
//! `azure_data_cosmos`).
//!
//! * Container `telemetry` (CONTRACT §3), partition key `/deviceId`, in the database
//!   `IOTSTREAM_COSMOS_DATABASE` (default `iotstream`); both created at start when the key is
//!   used (with Entra ID the SDK cannot create them: provision them with the infrastructure).
//! * One document per reading: `id` = the reading id, `deviceId`, `ts` (RFC 3339), `tsMs`
//!   (epoch ms, what range queries compare), `metrics`, and `messageId` when the client sent one.
//! * `put` creates each document: 201 means new, 409 means it was already stored (idempotent by
//!   reading id; the first write wins, like the embedded store). Repeats inside one call are
//!   answered without a request. Writes run concurrently (`IOTSTREAM_COSMOS_CONCURRENCY`,
//!   default 32): Cosmos DB has no multi-partition batch, and a device's readings may span
//!   partitions of a request.
//! * `contains`: concurrent point reads (1 RU each). `range`: a single-partition query ordered
//!   by `tsMs`.
//! * TTL: `IOTSTREAM_COSMOS_TTL` (e.g. `30d`) sets the container's default time to live when it
//!   is created; unset, readings are kept.
//! * Authentication: the account key (`IOTSTREAM_COSMOS_KEY`), else Entra ID: workload identity
//!   on AKS when `AZURE_FEDERATED_TOKEN_FILE` is set (with `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`
//!   and, for another cloud, `AZURE_AUTHORITY_HOST`: the variables AKS's webhook sets, read from
//!   the settings, which the binary gathers from its environment), otherwise managed identity
//!   (`IOTSTREAM_COSMOS_CLIENT_ID` picks a user-assigned one). The key is never logged.
//!
//! URLs: `cosmos://host:port` and `cosmos+https://host[:port]` both mean `https://host:port/`.

use crate::connect::{BackendUrls, parse_ttl};
use async_trait::async_trait;
use azure_data_cosmos::models::ContainerProperties;
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, CosmosRuntime, Query, RoutingStrategy,
};
use futures::{StreamExt, TryStreamExt};
use iotstream_core::ports::{PortResult, TelemetryStore};
use iotstream_core::{DeviceId, PortError, PortErrorKind, Reading, Ts};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

/// The container (CONTRACT §3).
pub const CONTAINER: &str = "telemetry";
/// The partition key path (CONTRACT §3).
pub const PARTITION_KEY: &str = "/deviceId";

/// One reading as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    id: String,
    device_id: String,
    ts: Ts,
    ts_ms: i64,
    metrics: iotstream_core::Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

impl Doc {
    fn of(r: &Reading) -> Doc {
        Doc {
            id: r.id.clone(),
            device_id: r.device_id.as_str().to_owned(),
            ts: r.ts,
            ts_ms: r.ts.millis(),
            metrics: r.metrics.clone(),
            message_id: r.message_id.clone(),
        }
    }

    fn into_reading(self) -> PortResult<Reading> {
        Ok(Reading {
            device_id: DeviceId::parse(&self.device_id)
                .map_err(|e| PortError::internal(format!("cannot decode stored device id: {e}")))?,
            id: self.id,
            ts: Ts(self.ts_ms),
            metrics: self.metrics,
            message_id: self.message_id,
        })
    }
}

/// Maps an SDK error by HTTP status: throttling (429), timeouts, unavailability and transport
/// failures are retryable; authentication problems are configuration; bad requests invalid.
fn cosmos_err(what: &str, e: &CosmosError) -> PortError {
    let status = e.status();
    let code = u16::from(status.status_code());
    let kind = if status.is_throttled()
        || status.is_service_unavailable()
        || status.is_gone()
        || status.is_transient()
    {
        PortErrorKind::Unavailable
    } else if status.is_timeout() {
        PortErrorKind::Timeout
    } else if status.is_unauthorized() || status.is_forbidden() {
        PortErrorKind::Config
    } else if status.is_bad_request() {
        PortErrorKind::Invalid
    } else if code == 0 || code >= 500 {
        PortErrorKind::Unavailable
    } else {
        PortErrorKind::Internal
    };
    PortError::new(
        kind,
        format!("cosmos db {what} (status {code}): {}", with_causes(e)),
    )
}

/// An error and its causes, each once: the SDK's own message often leaves out why (a refused
/// Entra ID token shows only as "failed to acquire AAD token").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(more.trim()) {
            text.push_str(": ");
            text.push_str(more.trim());
        }
        cause = c.source();
    }
    text
}

/// The endpoint of a `cosmos://` or `cosmos+https://` URL.
pub fn endpoint_of(url: &str) -> PortResult<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("cosmos+https://")
        .or_else(|| url.strip_prefix("cosmos://"))
        .ok_or_else(|| {
            PortError::config("telemetry store URL must be cosmos://host:port or cosmos+https://host")
        })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(PortError::config(
            "telemetry store URL must name only the account host (and port), like cosmos+https://acct.documents.azure.com",
        ));
    }
    Ok(format!("https://{host}/"))
}

/// The Cosmos DB telemetry store. Cheap to share behind an `Arc`.
pub struct CosmosStore {
    container: azure_data_cosmos::clients::ContainerClient,
    concurrency: usize,
}

impl std::fmt::Debug for CosmosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosStore")
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl CosmosStore {
    /// Connects, creates the database and container when the key is used, and opens the
    /// container.
    pub async fn connect(url: &str, urls: &BackendUrls) -> PortResult<Self> {
        let endpoint: AccountEndpoint = endpoint_of(url)?
            .parse()
            .map_err(|e| PortError::config(format!("telemetry store URL: {e}")))?;
        let database = urls
            .setting("IOTSTREAM_COSMOS_DATABASE")
            .unwrap_or("iotstream")
            .to_owned();
        let concurrency = match urls.setting("IOTSTREAM_COSMOS_CONCURRENCY") {
            None => 32,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    PortError::config(format!("IOTSTREAM_COSMOS_CONCURRENCY must be 1..1024, not {v:?}"))
                })?,
        };
        let ttl = urls
            .setting("IOTSTREAM_COSMOS_TTL")
            .map(|t| parse_ttl("IOTSTREAM_COSMOS_TTL", t))
            .transpose()?;
        let key = urls.setting("IOTSTREAM_COSMOS_KEY").map(str::to_owned);
        let account = match &key {
            Some(key) => AccountReference::with_authentication_key(endpoint, key.clone()),
            None => AccountReference::with_credential(endpoint, entra_credential(urls)?),
        };
        let region = urls
            .setting("IOTSTREAM_COSMOS_REGION")
            .unwrap_or("East US")
            .to_owned();
        // A runtime of its own: the SDK's global runtime caches each container, by endpoint,
        // database and name, together with the credential of the client that opened it first,
        // and signs every later client's requests to that container with it (an Entra ID
        // store would use another store's key).
        let runtime = CosmosRuntime::builder()
            .build()
            .await
            .map_err(|e| cosmos_err("runtime", &e))?;
        let client = CosmosClient::builder()
            .with_runtime(runtime)
            .build(account, RoutingStrategy::ProximityTo(region.into()))
            .await
            .map_err(|e| cosmos_err("connect", &e))?;
        if key.is_some() {
            create_if_missing(&client, &database, ttl).await?;
        }
        let container = client
            .database_client(database.as_str())
            .container_client(CONTAINER, None)
            .await
            .map_err(|e| cosmos_err("open container telemetry", &e))?;
        Ok(CosmosStore {
            container,
            concurrency,
        })
    }

    /// Creates one reading's document: true when new, false when it was already there.
    async fn create(&self, doc: Doc) -> PortResult<bool> {
        let pk = doc.device_id.clone();
        let id = doc.id.clone();
        match self.container.create_item(pk, &id, doc, None).await {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_conflict() => Ok(false),
            Err(e) => Err(cosmos_err("create", &e)),
        }
    }

    async fn exists(&self, device: &DeviceId, id: &str) -> PortResult<bool> {
        match self
            .container
            .read_item(device.as_str().to_owned(), id, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_not_found() => Ok(false),
            Err(e) => Err(cosmos_err("read", &e)),
        }
    }
}

/// The Entra ID credential: workload identity when a federated token file is set, else managed
/// identity. Workload identity takes `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
/// `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST` from the settings (the binary gathers
/// them from its environment, where AKS's webhook puts them) and hands them to the SDK as
/// options, so one process can hold stores with different identities and tests need not change
/// the process environment. A setting that is absent is left to the SDK, which reads the
/// environment variable of the same name. Managed identity takes its source from the process
/// environment only (azure_identity has no option for it): the host's endpoint with
/// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App Service, Functions, Container Apps; tested end
/// to end in `tests/real_cosmos_identity.rs`), else IMDS at 169.254.169.254 (not tested).
fn entra_credential(urls: &BackendUrls) -> PortResult<Arc<dyn azure_core::credentials::TokenCredential>> {
    let cred_err =
        |e: azure_core::Error| PortError::config(format!("cosmos db: no Entra ID credential: {e}"));
    if let Some(token_file) = urls.setting("AZURE_FEDERATED_TOKEN_FILE") {
        let mut credential_options = azure_identity::ClientAssertionCredentialOptions::default();
        if let Some(host) = urls.setting("AZURE_AUTHORITY_HOST") {
            // `CustomConfiguration` is non-exhaustive: no struct literal outside azure_core.
            let mut cloud = azure_core::cloud::CustomConfiguration::default();
            cloud.authority_host = host.to_owned();
            credential_options.client_options.cloud = Some(Arc::new(cloud.into()));
        }
        let options = azure_identity::WorkloadIdentityCredentialOptions {
            credential_options,
            client_id: urls.setting("AZURE_CLIENT_ID").map(str::to_owned),
            tenant_id: urls.setting("AZURE_TENANT_ID").map(str::to_owned),
            token_file_path: Some(token_file.into()),
        };
        return Ok(azure_identity::WorkloadIdentityCredential::new(Some(options)).map_err(cred_err)?);
    }
    let options = urls.setting("IOTSTREAM_COSMOS_CLIENT_ID").map(|id| {
        azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(id.to_owned())),
            ..Default::default()
        }
    });
    Ok(azure_identity::ManagedIdentityCredential::new(options).map_err(cred_err)?)
}

async fn create_if_missing(
    client: &CosmosClient,
    database: &str,
    ttl: Option<std::time::Duration>,
) -> PortResult<()> {
    match client.create_database(database, None).await {
        Ok(_) => {}
        Err(e) if e.status().is_conflict() => {}
        Err(e) => return Err(cosmos_err("create database", &e)),
    }
    let mut props = ContainerProperties::new(CONTAINER, PARTITION_KEY.into());
    if let Some(ttl) = ttl {
        props = props.with_default_ttl(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX));
    }
    match client
        .database_client(database)
        .create_container(props, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.status().is_conflict() => Ok(()),
        Err(e) => Err(cosmos_err("create container", &e)),
    }
}

#[async_trait]
impl TelemetryStore for CosmosStore {
    async fn put(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        // Only the first occurrence of an id in the call is written; repeats are duplicates.
        let mut seen: HashSet<&str> = HashSet::with_capacity(readings.len());
        let todo: Vec<usize> = (0..readings.len())
            .filter(|&i| seen.insert(readings[i].id.as_str()))
            .collect();
        let mut out = vec![false; readings.len()];
        let results: Vec<(usize, bool)> = futures::stream::iter(todo)
            .map(|i| async move { self.create(Doc::of(&readings[i])).await.map(|new| (i, new)) })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        for (i, new) in results {
            out[i] = new;
        }
        Ok(out)
    }

    async fn contains(&self, device_ids_and_ids: &[(DeviceId, String)]) -> PortResult<Vec<bool>> {
        let reads: Vec<_> = device_ids_and_ids
            .iter()
            .map(|(d, id)| self.exists(d, id))
            .collect();
        futures::stream::iter(reads)
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    async fn range(&self, device: &DeviceId, from: Ts, to: Ts, limit: usize) -> PortResult<Vec<Reading>> {
        if limit == 0 || from >= to {
            return Ok(Vec::new());
        }
        let top = limit.min(1_000_000);
        let query = Query::from(format!(
            "SELECT TOP {top} * FROM c WHERE c.deviceId = @d AND c.tsMs >= @from AND c.tsMs < @to ORDER BY c.tsMs"
        ))
        .with_parameter("@d", device.as_str())
        .and_then(|q| q.with_parameter("@from", from.millis()))
        .and_then(|q| q.with_parameter("@to", to.millis()))
        .map_err(|e| cosmos_err("query", &e))?;
        let scope = azure_data_cosmos::FeedScope::Partition(device.as_str().to_owned().into());
        let docs: Vec<Doc> = self
            .container
            .query_items::<Doc>(query, scope, None)
            .await
            .map_err(|e| cosmos_err("query", &e))?
            .take(top)
            .try_collect()
            .await
            .map_err(|e| cosmos_err("query", &e))?;
        docs.into_iter().map(Doc::into_reading).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

    #[test]
    fn urls_map_to_https_endpoints() {
        assert_eq!(
            endpoint_of("cosmos://127.0.0.1:8081").unwrap(),
            "https://127.0.0.1:8081/"
        );
        assert_eq!(
            endpoint_of("cosmos+https://acct.documents.azure.com/").unwrap(),
            "https://acct.documents.azure.com/"
        );
        for bad in [
            "https://acct",
            "cosmos://",
            "cosmos://key@host:1",
            "cosmos://host/db",
        ] {
            assert!(endpoint_of(bad).is_err(), "{bad}");
        }
    }
}
