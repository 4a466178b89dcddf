//! What every shadow-fleet function shares at its Lambda boundary: logs, metrics, configuration from the
//! environment, the invocation's deadline, and errors that tell Lambda whether a retry can help.

pub mod config;
pub mod deadline;
pub mod error;
pub mod event;
pub mod metrics;
pub mod telemetry;
