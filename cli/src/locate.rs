//! Where shadow-fleet's tables and functions are: a deployed stack's outputs (`--stack NAME`), or the environment
//! variables the functions themselves read (`HISTORY_TABLE`, `PUSH_TABLE`, ...) plus the functions' names.

use aws_config::SdkConfig;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;

use crate::error::CliError;

/// The names the CLI needs; each command asks for the ones it uses.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// Where they came from, for messages: `stack NAME` or `the environment`.
    pub origin: String,
    pub history_table: Option<String>,
    pub push_table: Option<String>,
    pub push_function: Option<String>,
    pub history_function: Option<String>,
    /// The dead-letter and on-failure queues (`dlq`): URLs.
    pub history_dlq: Option<String>,
    pub rule_error_queue: Option<String>,
    pub history_ingest_dlq: Option<String>,
    pub push_dlq: Option<String>,
    /// The deployed shadow-push's request quota (the stack's `PushMaxTps` parameter, its `PUSH_MAX_TPS`); `None`
    /// without `--stack`.
    pub push_max_tps: Option<u32>,
}

/// Stack outputs (in `template.yaml`) and the environment variables that stand for them without `--stack`.
const HISTORY_TABLE: (&str, &str) = ("HistoryTableName", "HISTORY_TABLE");
const PUSH_TABLE: (&str, &str) = ("PushTableName", "PUSH_TABLE");
const PUSH_FUNCTION: (&str, &str) = ("ShadowPushFunctionArn", "PUSH_FUNCTION_NAME");
const HISTORY_FUNCTION: (&str, &str) = ("ShadowHistoryFunctionArn", "HISTORY_FUNCTION_NAME");
const HISTORY_DLQ: (&str, &str) = ("HistoryDlqUrl", "HISTORY_DLQ_URL");
const RULE_ERROR_QUEUE: (&str, &str) = ("RuleErrorQueueUrl", "RULE_ERROR_QUEUE_URL");
/// Only with `QueuedIngestion=true`.
const HISTORY_INGEST_DLQ: (&str, &str) = ("HistoryIngestDlqUrl", "HISTORY_INGEST_DLQ_URL");
const PUSH_DLQ: (&str, &str) = ("PushDlqUrl", "PUSH_DLQ_URL");
/// The stack parameter that sets shadow-push's `PUSH_MAX_TPS`.
pub const PUSH_MAX_TPS_PARAMETER: &str = "PushMaxTps";

impl Locations {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            origin: "the environment".into(),
            history_table: var(HISTORY_TABLE.1),
            push_table: var(PUSH_TABLE.1),
            push_function: var(PUSH_FUNCTION.1),
            history_function: var(HISTORY_FUNCTION.1),
            history_dlq: var(HISTORY_DLQ.1),
            rule_error_queue: var(RULE_ERROR_QUEUE.1),
            history_ingest_dlq: var(HISTORY_INGEST_DLQ.1),
            push_dlq: var(PUSH_DLQ.1),
            push_max_tps: None,
        }
    }

    /// The outputs of the deployed stack `name` (DescribeStacks). Every output the CLI knows must be there.
    pub async fn from_stack(config: &SdkConfig, name: &str) -> Result<Self, CliError> {
        let client = aws_sdk_cloudformation::Client::new(config);
        let described = client.describe_stacks().stack_name(name).send().await;
        let described = match described {
            Ok(d) => d,
            Err(e) if e.as_service_error().and_then(|s| s.message()).is_some_and(|m| m.contains("does not exist")) => {
                return Err(CliError::Failure(format!("stack {name} does not exist (in this account and region)")));
            }
            Err(e) => return Err(CliError::sdk(format!("reading the outputs of stack {name}"))(e)),
        };
        let stack = described.stacks.unwrap_or_default().into_iter().next();
        let Some(stack) = stack else {
            return Err(CliError::Failure(format!("stack {name} does not exist (in this account and region)")));
        };
        let outputs = stack.outputs.unwrap_or_default();
        let output = |key: &str| {
            outputs.iter().find(|o| o.output_key() == Some(key)).and_then(|o| o.output_value()).map(str::to_owned)
        };
        let missing: Vec<&str> =
            [HISTORY_TABLE.0, PUSH_TABLE.0, PUSH_FUNCTION.0].into_iter().filter(|k| output(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(CliError::Failure(format!(
                "stack {name} has no output {}: is it a shadow-fleet stack, deployed from this template.yaml?",
                missing.join(", ")
            )));
        }
        // The parameter the template passes to shadow-push as PUSH_MAX_TPS (read by the same DescribeStacks).
        let push_max_tps = stack
            .parameters
            .unwrap_or_default()
            .iter()
            .find(|p| p.parameter_key() == Some(PUSH_MAX_TPS_PARAMETER))
            .and_then(|p| p.parameter_value())
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    CliError::Failure(format!(
                        "stack {name}: parameter {PUSH_MAX_TPS_PARAMETER} is {v:?}, not a number"
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            push_max_tps,
            origin: format!("stack {name}"),
            history_table: output(HISTORY_TABLE.0),
            push_table: output(PUSH_TABLE.0),
            push_function: output(PUSH_FUNCTION.0),
            history_function: output(HISTORY_FUNCTION.0),
            history_dlq: output(HISTORY_DLQ.0),
            rule_error_queue: output(RULE_ERROR_QUEUE.0),
            history_ingest_dlq: output(HISTORY_INGEST_DLQ.0),
            push_dlq: output(PUSH_DLQ.0),
        })
    }

    fn need(&self, value: &Option<String>, (output, var): (&str, &str)) -> Result<String, CliError> {
        value.clone().ok_or_else(|| {
            CliError::Failure(format!(
                "no {output} in {}: pass --stack NAME (a deployed shadow-fleet stack) or set {var}",
                self.origin
            ))
        })
    }

    pub fn history_table(&self) -> Result<String, CliError> {
        self.need(&self.history_table, HISTORY_TABLE)
    }

    pub fn push_table(&self) -> Result<String, CliError> {
        self.need(&self.push_table, PUSH_TABLE)
    }

    pub fn push_function(&self) -> Result<String, CliError> {
        self.need(&self.push_function, PUSH_FUNCTION)
    }

    pub fn history_function(&self) -> Result<String, CliError> {
        self.need(&self.history_function, HISTORY_FUNCTION)
    }
}
