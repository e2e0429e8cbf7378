//! **ingest**: `POST /api/telemetry`.
//!
//! - Trigger: HTTP (the native axum listener, or the Functions host's `httpTrigger` through the
//!   custom handler).
//! - Input: the `Authorization`, `Content-Type` and body of the request ([`Input`]).
//! - Outputs: each new reading stored in the telemetry store and published on the `telemetry`
//!   topic (key = device id), then `202 {"accepted": n, "duplicates": d}`.
//! - Delivery: a 202 is sent only after both writes are durable; a failure answers 503 and the
//!   client's retry is safe.
//! - Idempotency key: the reading id (device + client message id, or device + ts + metrics).
//!
//! Many concurrent requests share one durable write through the [`GroupCommitter`].

pub mod auth;
mod commit;
mod ratelimit;

pub use auth::DeviceKeys;
pub use commit::{ADMIT_WAIT, CommitError, CommitOutcome, GroupCommitter};
pub use ratelimit::RateLimiter;

use iotstream_core::reading::{BodyError, BodyFormat, Limits, parse_body};
use iotstream_core::sas::{AuthError, SasToken};
use iotstream_core::{FieldError, PortError, Ts};
use serde::Serialize;

/// A telemetry request as the function sees it.
#[derive(Debug, Clone)]
pub struct Input {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// `202` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Output {
    pub accepted: usize,
    pub duplicates: usize,
}

/// What ingest needs.
pub struct Deps {
    pub keys: DeviceKeys,
    pub committer: GroupCommitter,
    pub limiter: RateLimiter,
    pub limits: Limits,
    /// Body size limit in bytes (default 1 MiB).
    pub max_body_bytes: usize,
}

/// Every way a telemetry request can fail; `status()` is its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the token is for device {token} but reading {index} is for device {reading}")]
    Forbidden {
        token: String,
        reading: String,
        index: usize,
    },
    #[error("request body is {size} bytes; the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("request has {count} readings; the limit is {limit}")]
    TooManyReadings { count: usize, limit: usize },
    #[error("content type must be application/json or application/x-ndjson")]
    UnsupportedMediaType,
    #[error("{0}")]
    Malformed(String),
    #[error("the request has no readings")]
    Empty,
    #[error("{} invalid reading field(s); nothing was stored", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("device is over its rate limit")]
    RateLimited { retry_after_secs: u64 },
    #[error("storage is unavailable; nothing was stored")]
    Unavailable(PortError),
    #[error("ingest is over capacity; nothing was stored, retry shortly")]
    Overloaded,
}

impl IngestError {
    pub fn status(&self) -> u16 {
        match self {
            IngestError::Unauthorized(_) => 401,
            IngestError::Forbidden { .. } => 403,
            IngestError::BodyTooLarge { .. } | IngestError::TooManyReadings { .. } => 413,
            IngestError::UnsupportedMediaType => 415,
            IngestError::Malformed(_) | IngestError::Empty | IngestError::Invalid(_) => 400,
            IngestError::RateLimited { .. } => 429,
            IngestError::Unavailable(_) | IngestError::Overloaded => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthorized(AuthError::Missing) => "missing_token",
            IngestError::Unauthorized(AuthError::Expired) => "token_expired",
            // One code for both, so callers cannot probe which device ids exist.
            IngestError::Unauthorized(AuthError::BadSignature | AuthError::UnknownDevice) => "invalid_token",
            IngestError::Unauthorized(AuthError::Malformed(_)) => "malformed_token",
            IngestError::Forbidden { .. } => "device_mismatch",
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::TooManyReadings { .. } => "too_many_readings",
            IngestError::UnsupportedMediaType => "unsupported_media_type",
            IngestError::Malformed(_) => "malformed_body",
            IngestError::Empty => "empty_body",
            IngestError::Invalid(_) => "invalid_reading",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::Unavailable(_) => "backend_unavailable",
            IngestError::Overloaded => "overloaded",
        }
    }

    /// Seconds for a `Retry-After` header, where one applies.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            IngestError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            IngestError::Unavailable(_) | IngestError::Overloaded => Some(1),
            _ => None,
        }
    }

    pub fn details(&self) -> &[FieldError] {
        match self {
            IngestError::Invalid(d) => d,
            _ => &[],
        }
    }
}

/// Authenticates, parses, validates and durably accepts one request.
pub async fn handle(input: Input, deps: &Deps, now: Ts) -> Result<Output, IngestError> {
    let token = SasToken::parse(input.authorization.as_deref().unwrap_or(""))?;
    match deps.keys.verify(&token, now).await {
        Ok(()) => {}
        Err(auth::KeyError::Auth(e)) => return Err(e.into()),
        Err(auth::KeyError::Unavailable(e)) => return Err(IngestError::Unavailable(e)),
    }
    if !deps.limiter.allow(token.device_id.as_str(), now) {
        metrics::counter!("iotstream_ingest_rejected_total", "reason" => "rate_limited").increment(1);
        return Err(IngestError::RateLimited { retry_after_secs: 1 });
    }
    let format = input
        .content_type
        .as_deref()
        .and_then(BodyFormat::from_content_type)
        .ok_or(IngestError::UnsupportedMediaType)?;
    if input.body.len() > deps.max_body_bytes {
        return Err(IngestError::BodyTooLarge {
            size: input.body.len(),
            limit: deps.max_body_bytes,
        });
    }
    let readings = parse_body(&input.body, format, now, &deps.limits).map_err(|e| match e {
        BodyError::Malformed(m) => IngestError::Malformed(m),
        BodyError::TooMany { count, limit } => IngestError::TooManyReadings { count, limit },
        BodyError::Empty => IngestError::Empty,
        BodyError::Invalid(details) => IngestError::Invalid(details),
    })?;
    if let Some((index, r)) = readings
        .iter()
        .enumerate()
        .find(|(_, r)| r.device_id != token.device_id)
    {
        return Err(IngestError::Forbidden {
            token: token.device_id.to_string(),
            reading: r.device_id.to_string(),
            index,
        });
    }
    let n = readings.len();
    let outcome = deps.committer.commit(readings).await.map_err(|e| match e {
        CommitError::Overloaded => {
            metrics::counter!("iotstream_ingest_rejected_total", "reason" => "overloaded").increment(1);
            IngestError::Overloaded
        }
        CommitError::Sink(e) => IngestError::Unavailable(e),
    })?;
    metrics::counter!("iotstream_ingest_readings_total").increment(outcome.accepted as u64);
    metrics::counter!("iotstream_ingest_duplicates_total").increment(outcome.duplicates as u64);
    debug_assert_eq!(outcome.accepted + outcome.duplicates, n);
    Ok(Output {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    })
}
