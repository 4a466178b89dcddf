//! What a push invocation fails with, whether a retry helps, and the error type Lambda reports.

use lambda_runtime::Diagnostic;
use shadow_core::push::PushRequestError;
use shadow_core::push::machine;
use shadow_core::retry::{GaveUp, Retryable};
use shadow_core::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    InvalidRequest(#[from] PushRequestError),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("push {0} has no record")]
    UnknownPush(String),
    /// A target source that cannot be walked (a thing group that does not exist, a query the index refuses).
    #[error("{0}")]
    UnknownTargets(String),
    #[error("push record")]
    Store(#[source] GaveUp<ServiceError>),
    #[error("resolving targets")]
    Targets(#[source] GaveUp<ServiceError>),
    /// A synchronous start that reached its answer bound (`PUSH_ANSWER_MS`) waiting on `what`.
    #[error("no answer within {within_s} s: still waiting for {what}; nothing was started")]
    NotAnswered {
        what: &'static str,
        within_s: u64,
        #[source]
        last: GaveUp<ServiceError>,
    },
    #[error("could not serialize {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Retryable for PushError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidEvent(_)
            | Self::UnknownPush(_)
            | Self::UnknownTargets(_)
            | Self::Serialize(..) => false,
            Self::NotAnswered { .. } => true,
            Self::Store(e) | Self::Targets(e) => match e {
                GaveUp::OutOfTime { .. } => true,
                GaveUp::Final(e) => e.is_retryable(),
            },
        }
    }
}

impl From<PushError> for Diagnostic {
    fn from(error: PushError) -> Self {
        let kind = match &error {
            PushError::InvalidRequest(_) => "InvalidRequest",
            PushError::InvalidEvent(_) => "InvalidEvent",
            PushError::UnknownPush(_) => "UnknownPush",
            PushError::UnknownTargets(_) => "UnknownTargets",
            PushError::Store(_) => "Store",
            PushError::Targets(_) => "Targets",
            PushError::NotAnswered { .. } => "NotAnswered",
            PushError::Serialize(..) => "Serialize",
        };
        shadow_runtime::error::diagnostic(kind, &error)
    }
}

pub(super) fn refusal(refused: machine::Refusal) -> PushError {
    PushError::InvalidRequest(PushRequestError(vec![(refused.field.into(), refused.reason)]))
}
