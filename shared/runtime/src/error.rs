//! Errors at the Lambda boundary: the `errorType` says whether a retry can help, so that operators (and the DLQ's
//! readers) can tell a malformed event from a passing fault.

use lambda_runtime::Diagnostic;
use shadow_core::retry::Retryable;

/// `Retryable.<Kind>` or `Final.<Kind>`, with the error's whole chain as the message.
pub fn diagnostic<E: std::error::Error + Retryable>(kind: &str, error: &E) -> Diagnostic {
    let class = if error.is_retryable() { "Retryable" } else { "Final" };
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    Diagnostic { error_type: format!("{class}.{kind}"), error_message: message }
}
