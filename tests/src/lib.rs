//! Support for the tests that need the local AWS stack: its settings, unique names, SDK clients pointed at it,
//! a Lambda Runtime API stand-in that runs the real function binaries, and a fault-injecting proxy.

pub mod cli;
pub mod crash;
pub mod demo;
pub mod fault_proxy;
pub mod history;
pub mod http;
pub mod iam;
pub mod lambda;
pub mod local_lambda;
pub mod push;
pub mod rules;
pub mod service;
pub mod stack;

pub use stack::{Stack, unique};
