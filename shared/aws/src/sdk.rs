//! Building SDK configuration once per process, and classifying SDK errors.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use shadow_core::service::{FaultKind, ServiceError};

/// The shared SDK configuration: region, credentials and `AWS_ENDPOINT_URL_*` from the environment.
///
/// SDK retries are off: shadow-fleet retries in its own loops, which pace themselves against the invocation's
/// deadline and, unlike the SDK's retry token bucket, do not stop retrying after a burst of throttles.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "InternalServerException",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionConflictException",
];

/// How a service error code and HTTP status should be treated.
pub fn fault_kind(code: Option<&str>, status: u16) -> FaultKind {
    match code {
        Some(code) if THROTTLING_CODES.contains(&code) => FaultKind::Throttled,
        Some(code) if TRANSIENT_CODES.contains(&code) => FaultKind::Transient,
        _ if status == 429 => FaultKind::Throttled,
        _ if status >= 500 => FaultKind::Transient,
        _ => FaultKind::Rejected,
    }
}

/// A service's answer to a failed call: its error code and message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServiceSaid(pub String);

/// Wraps an SDK error, classified for retrying: a service's answer keeps its code and message (never the SDK's
/// Debug dump of the metadata); a timeout or a failed connection keeps the SDK's error and its causes.
pub fn service_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> ServiceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, code) = match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().map(str::to_owned);
            let status = ctx.raw().status().as_u16();
            let kind = fault_kind(code.as_deref(), status);
            // What the service said, in its own words: the SDK's error prints its whole metadata with Debug.
            let said = match (code.as_deref(), ctx.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                (None, Some(message)) => format!("HTTP {status}: {message}"),
                (None, None) => format!("HTTP {status}"),
            };
            return ServiceError::new(operation, kind, code, ServiceSaid(said));
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (FaultKind::Transient, None)
        }
        _ => (FaultKind::Rejected, None),
    };
    ServiceError::new(operation, kind, code, err)
}

/// Whether DynamoDB refused a write because its condition did not hold: an answer, not a fault.
pub fn condition_failed<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error().is_some_and(|e| e.code() == Some("ConditionalCheckFailedException"))
}

/// The result of a conditional DynamoDB write (PutItem, UpdateItem, DeleteItem with a `ConditionExpression`).
pub trait ConditionalWrite<T> {
    /// The write's output when its condition held, `None` when it did not; any other error as [`service_error`]
    /// classifies it.
    fn unless_condition_failed(self, operation: &'static str) -> Result<Option<T>, ServiceError>;

    /// Whether the condition held (and so the write was made).
    fn condition_held(self, operation: &'static str) -> Result<bool, ServiceError>
    where
        Self: Sized,
    {
        Ok(self.unless_condition_failed(operation)?.is_some())
    }
}

impl<T, E> ConditionalWrite<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn unless_condition_failed(self, operation: &'static str) -> Result<Option<T>, ServiceError> {
        match self {
            Ok(output) => Ok(Some(output)),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(service_error(operation, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    #[test]
    fn classifies_codes_and_statuses() {
        assert_eq!(fault_kind(Some("ThrottlingException"), 400), FaultKind::Throttled);
        assert_eq!(fault_kind(Some("ProvisionedThroughputExceededException"), 400), FaultKind::Throttled);
        assert_eq!(fault_kind(None, 429), FaultKind::Throttled);
        assert_eq!(fault_kind(Some("ServiceUnavailableException"), 503), FaultKind::Transient);
        assert_eq!(fault_kind(None, 500), FaultKind::Transient);
        assert_eq!(fault_kind(Some("ResourceNotFoundException"), 404), FaultKind::Rejected);
        assert_eq!(fault_kind(Some("ConflictException"), 409), FaultKind::Rejected);
        assert_eq!(fault_kind(Some("ValidationException"), 400), FaultKind::Rejected);
    }

    #[test]
    fn a_service_answer_keeps_its_code_and_message_in_its_own_words() {
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let answer = |code: Option<&str>, message: Option<&str>| {
            let mut meta = ErrorMetadata::builder();
            if let Some(code) = code {
                meta = meta.code(code);
            }
            if let Some(message) = message {
                meta = meta.message(message);
            }
            let status = StatusCode::try_from(400).expect("a valid status");
            let raw = HttpResponse::new(status, SdkBody::empty());
            service_error("GetItem", SdkError::service_error(GetItemError::generic(meta.build()), raw))
        };
        let e = answer(Some("ResourceNotFoundException"), Some("Requested resource not found"));
        assert_eq!(e.code.as_deref(), Some("ResourceNotFoundException"));
        assert_eq!(e.kind, FaultKind::Rejected);
        assert_eq!(e.source.to_string(), "ResourceNotFoundException: Requested resource not found");
        assert_eq!(answer(Some("ValidationException"), None).source.to_string(), "ValidationException");
        assert_eq!(answer(None, Some("no")).source.to_string(), "HTTP 400: no");
        assert_eq!(answer(None, None).source.to_string(), "HTTP 400");
    }

    type Written<T> = Result<T, SdkError<UpdateItemError, HttpResponse>>;

    fn refused(code: &str, status: u16) -> SdkError<UpdateItemError, HttpResponse> {
        let response = HttpResponse::new(
            status.try_into().unwrap_or_else(|e| panic!("status {status}: {e}")),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(UpdateItemError::generic(ErrorMetadata::builder().code(code).build()), response)
    }

    #[test]
    fn a_failed_condition_is_an_answer_and_other_errors_are_classified() {
        assert!(matches!(Written::Ok(7).unless_condition_failed("UpdateItem"), Ok(Some(7))));
        assert!(matches!(Written::Ok(()).condition_held("UpdateItem"), Ok(true)));
        let condition_failed = || refused("ConditionalCheckFailedException", 400);
        assert!(matches!(Written::<()>::Err(condition_failed()).unless_condition_failed("UpdateItem"), Ok(None)));
        assert!(matches!(Written::<()>::Err(condition_failed()).condition_held("UpdateItem"), Ok(false)));
        for (code, status, kind) in [
            ("ProvisionedThroughputExceededException", 400, FaultKind::Throttled),
            ("InternalServerError", 500, FaultKind::Transient),
            ("ValidationException", 400, FaultKind::Rejected),
            ("TransactionCanceledException", 400, FaultKind::Rejected),
        ] {
            let Err(err) = Written::<()>::Err(refused(code, status)).condition_held("UpdateItem") else {
                panic!("{code} is an error")
            };
            assert_eq!((err.operation, err.kind, err.code.as_deref()), ("UpdateItem", kind, Some(code)));
        }
    }
}
