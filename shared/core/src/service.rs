//! What the core asks of any store or remote service, and how it tells a passing fault from a final one.

use std::error::Error as StdError;

use crate::retry::Retryable;

/// How a remote call failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The service asked us to slow down (HTTP 429, ThrottlingException, ProvisionedThroughputExceeded...).
    Throttled,
    /// A fault that may pass: 5xx, a timeout, a dropped connection.
    Transient,
    /// The request itself is wrong or the resource is missing: repeating it cannot help.
    Rejected,
}

/// A failed call to a service, keeping the service's own error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind:?}{code}): {source}", code = code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct ServiceError {
    pub operation: &'static str,
    pub kind: FaultKind,
    /// The service's error code (`ThrottlingException`, `ResourceNotFoundException`...), when it sent one.
    pub code: Option<String>,
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

impl ServiceError {
    pub fn new(
        operation: &'static str,
        kind: FaultKind,
        code: Option<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self { operation, kind, code, source: source.into() }
    }

    pub fn is_throttling(&self) -> bool {
        self.kind == FaultKind::Throttled
    }
}

impl Retryable for ServiceError {
    fn is_retryable(&self) -> bool {
        matches!(self.kind, FaultKind::Throttled | FaultKind::Transient)
    }
}
