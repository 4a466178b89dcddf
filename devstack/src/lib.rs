//! The local AWS that the stack (`local-lambda`, `fleet-local`), the integration tests, the demo and the bench run
//! on: the stack's settings, unique names, SDK clients pointed at it, a Lambda Runtime API stand-in that runs the
//! real function binaries, Lambda's retries, queues and schedules around it, the rules-engine stand-in, fault-injecting
//! and crashing proxies, an account-wide quota in front of the data plane, and the fixtures the tests and the demo share.

pub mod cli;
pub mod crash;
pub mod demo;
pub mod fault_proxy;
pub mod history;
pub mod http;
pub mod iam;
pub mod lambda;
pub mod local_lambda;
pub mod mqtt_ca;
pub mod mqtt_device;
pub mod mqtt_fleet;
pub mod partition_front;
pub mod push;
pub mod quota_front;
pub mod registry_front;
pub mod rules;
pub mod service;
pub mod shadow_mqtt;
pub mod stack;

pub use stack::{Stack, unique};
