//! Error kinds shared by every port and function.

use serde::Serialize;

/// One problem with one field of one input item (a reading in a batch, a rule in a file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Position of the item in its batch (readings) or file (rules); absent for single items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field, e.g. `deviceId`, `metrics.temperature`, `ts`.
    pub field: String,
    /// Why it is wrong, lowercase, no full stop.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "[{i}] {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Backend-neutral failure kinds. The kind, not the engine, decides what callers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// The backend cannot be reached or is overloaded: retry later (HTTP 503).
    Unavailable,
    /// A request timed out; the outcome is unknown, so retry idempotently.
    Timeout,
    /// The data cannot be processed, now or ever (poison message): dead-letter it.
    Invalid,
    /// Something is missing that the caller expected to exist.
    NotFound,
    /// The engine is not compiled in or the URL is not understood.
    Config,
    /// Anything else: a bug or a corrupted store.
    Internal,
}

/// A failure of a port (store, bus, database, cache, notifier), keeping its cause as text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PortError {
    pub kind: PortErrorKind,
    pub message: String,
}

impl PortError {
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> Self {
        PortError {
            kind,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Unavailable, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Invalid, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Internal, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Config, message)
    }

    /// The one place that decides redelivery (true) versus dead-letter (false).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            PortErrorKind::Unavailable | PortErrorKind::Timeout | PortErrorKind::Internal
        )
    }
}
