//! shadow-fleet's AWS adapters. Each implements a small trait of `shadow-core` over one AWS service, and turns the
//! SDK's errors into `shadow_core::store::ServiceError`, keeping the SDK error as the source.

pub mod history;
pub mod sdk;
pub mod tables;

pub use history::DynamoHistoryStore;
