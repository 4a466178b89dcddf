//! What can go wrong, and the exit code each gives: 1 for a failure the user must look at, 2 for bad usage.

use std::error::Error as StdError;

use shadow_core::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage: a malformed argument that clap could not check (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A failure the user must look at; the message says what (exit 1).
    #[error("{0}")]
    Failure(String),
    /// A call to AWS failed.
    #[error("{doing}")]
    Service {
        doing: String,
        #[source]
        source: ServiceError,
    },
    /// A call to AWS failed, outside the shared adapters.
    #[error("{doing}")]
    Sdk {
        doing: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// An error and its causes on one line, each said once (`a: b: c`).
pub fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn service(doing: impl Into<String>) -> impl FnOnce(ServiceError) -> Self {
        let doing = doing.into();
        move |source| Self::Service { doing, source }
    }

    pub fn sdk<E: StdError + Send + Sync + 'static>(doing: impl Into<String>) -> impl FnOnce(E) -> Self {
        let doing = doing.into();
        move |source| Self::Sdk { doing, source: Box::new(source) }
    }

    /// The message and its causes on one line, each said once (`reading ...: Query failed: ...`), with a hint when
    /// the cause is one a user can fix.
    pub fn report(&self) -> String {
        let mut parts = vec![self.to_string()];
        let mut source = self.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            source = cause.source();
        }
        let mut message = parts.join(": ");
        let lower = message.to_lowercase();
        if lower.contains("credentials") && (lower.contains("no credentials") || lower.contains("credentials provider"))
        {
            message.push_str(
                "\nhint: no AWS credentials were found; configure them as for the AWS CLI (AWS_PROFILE, `aws \
                 configure`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            );
        } else if lower.contains("dispatch failure")
            || lower.contains("connection refused")
            || lower.contains("io error")
        {
            message.push_str("\nhint: the service did not answer; locally, is the stack up (`make stack-up`)?");
        }
        message
    }
}
