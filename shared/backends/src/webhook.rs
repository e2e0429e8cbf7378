//! `WebhookNotifier`: the HTTP [`Notifier`], and the body signature helper.
//!
//! Each request is `POST <url>` with the event body and the headers
//! `Content-Type: application/json`, `X-Iotstream-Event`, `X-Iotstream-Delivery`,
//! `X-Iotstream-Signature` (`sha256=<hex HMAC-SHA256 of the body>`) and
//! `User-Agent: iotstream/<version>`. Redirects are not followed (a redirect would turn the POST
//! into a GET and re-send the signature elsewhere). Neither the secret nor the body is logged or
//! put into error messages; errors also omit the URL (it may carry a token).

use async_trait::async_trait;
use iotstream_core::ports::{Notifier, PortResult, WebhookRequest};
use iotstream_core::{PortError, PortErrorKind};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use std::time::Duration;

/// Per-request timeout of [`WebhookNotifier::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` of webhook requests.
pub const USER_AGENT: &str = concat!("iotstream/", env!("CARGO_PKG_VERSION"));

/// Posts webhook requests to one URL.
///
/// Outcome mapping. The kinds say what the response means; the notify function still retries
/// every failure until its attempts run out (CONTRACT §4: any non-2xx is retried), then
/// dead-letters it:
///
/// | response                                   | result                           |
/// |--------------------------------------------|----------------------------------|
/// | 2xx                                        | `Ok`                             |
/// | 5xx, 408 Request Timeout, 425, 429         | `Unavailable` (retry later)      |
/// | other 4xx (400, 401, 403, 404, 410, 422…)  | `Invalid` (the endpoint refuses it; retried anyway) |
/// | 1xx, 3xx                                   | `Invalid` (fix the URL)          |
/// | timeout                                    | `Timeout` (retry later)          |
/// | connection refused/reset, DNS, TLS         | `Unavailable` (retry later)      |
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl WebhookNotifier {
    /// A notifier for `url` (http or https) with [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str) -> PortResult<Self> {
        Self::with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// A notifier for `url` with a per-request `timeout` (connect + send + response).
    pub fn with_timeout(url: &str, timeout: Duration) -> PortResult<Self> {
        let url =
            reqwest::Url::parse(url).map_err(|e| PortError::config(format!("invalid webhook URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PortError::config(format!(
                "webhook URL scheme must be http or https, not {:?}",
                url.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| PortError::config(format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookNotifier { client, url })
    }
}

fn header(name: &str, value: &str) -> PortResult<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| PortError::invalid(format!("{name} is not a valid header value")))
}

/// Maps a non-2xx status (see the table on [`WebhookNotifier`]).
pub fn status_error(status: StatusCode) -> PortError {
    let kind = match status.as_u16() {
        408 | 425 | 429 => PortErrorKind::Unavailable,
        s if status.is_server_error() || s >= 600 => PortErrorKind::Unavailable,
        _ => PortErrorKind::Invalid,
    };
    PortError::new(kind, format!("webhook responded {status}"))
}

fn request_error(e: reqwest::Error) -> PortError {
    let e = e.without_url();
    if e.is_timeout() {
        PortError::new(PortErrorKind::Timeout, format!("webhook request timed out: {e}"))
    } else {
        PortError::unavailable(format!("webhook request failed: {e}"))
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, request: &WebhookRequest) -> PortResult<()> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("X-Iotstream-Event", header("event", &request.event)?)
            .header(
                "X-Iotstream-Delivery",
                header("delivery id", &request.delivery_id)?,
            )
            .header("X-Iotstream-Signature", header("signature", &request.signature)?)
            .body(request.body.clone())
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let kind = |s: u16| status_error(StatusCode::from_u16(s).unwrap()).kind;
        assert_eq!(kind(500), PortErrorKind::Unavailable);
        assert_eq!(kind(503), PortErrorKind::Unavailable);
        assert_eq!(kind(429), PortErrorKind::Unavailable);
        assert_eq!(kind(408), PortErrorKind::Unavailable);
        assert_eq!(kind(400), PortErrorKind::Invalid);
        assert_eq!(kind(404), PortErrorKind::Invalid);
        assert_eq!(kind(301), PortErrorKind::Invalid);
        assert!(status_error(StatusCode::BAD_GATEWAY).message.contains("502"));
    }

    #[test]
    fn rejects_non_http_urls() {
        assert!(WebhookNotifier::new("ftp://example.com/hook").is_err());
        assert!(WebhookNotifier::new("not a url").is_err());
        assert!(WebhookNotifier::new("https://example.com/hook").is_ok());
    }
}
