//! IAM from the calls. Neither DynamoDB Local nor moto checks IAM, so an action a function's policy lacks only shows
//! on AWS, as AccessDenied. With `FLEET_IAM_RECORD=<dir>` set, every function binary the integration tests start
//! reaches each AWS endpoint through a recording proxy (`devstack::iam`) that forwards every request unchanged and
//! appends its IAM action and resource to `<dir>/<function>.jsonl`. [`check`] (the `iam-check` binary) then holds
//! those calls against the functions' inline policies in `template.yaml`: every call must be allowed on its resource,
//! and every grant must be used or explained under the function's `Metadata: IamExceptions`.
//!
//! The `shadow-fleet` CLI is held to the operators' managed policies the same way. The CLI tests record each
//! command's calls as the policy it needs: `shadow-fleet-readonly.jsonl` or `shadow-fleet-operator.jsonl`
//! ([`record::cli_recording`]). Each `AWS::IAM::ManagedPolicy` names the recordings it must allow under
//! `Metadata: IamRecordings`; the tables and function the CLI reached are traced to the template's resources through
//! the variables and stack outputs it reads them from ([`template::CLI_LOCATIONS`]), and a `--stack NAME` stands for
//! the stack the template is deployed as.
//!
//! - [`identify`]: what a request is (an HTTP request to an AWS service -> its IAM [`Call`]s);
//! - [`record`]: which file the calls go to, where their resources came from, appending them as JSON lines;
//! - [`template`]: reading the template's policies, variables, outputs and exceptions;
//! - [`check`](mod@check): holding the calls against the policies;
//! - [`report`]: the tables and the problems.

pub mod check;
pub mod identify;
pub mod record;
pub mod report;
pub mod template;

pub use check::{CheckError, check, check_calls};
pub use identify::{Call, Service};
pub use report::{Report, Row, Section};
