//! shadow-fleet's AWS adapters. Each implements a small trait of `shadow-core` over one AWS service, and turns the
//! SDK's errors into `shadow_core::service::ServiceError`, keeping the SDK error as the source.

pub mod handoff;
pub mod history;
pub mod push_reader;
pub mod push_store;
pub mod registry;
pub mod sdk;
pub mod senders;
pub mod shadows;
pub mod tables;
pub mod throttles;
pub mod writes;

pub use handoff::{Continuation, SqsHandOff};
pub use history::DynamoHistoryStore;
pub use push_reader::DynamoPushReader;
pub use push_store::DynamoPushStore;
pub use registry::IotRegistry;
pub use shadows::DataPlaneShadows;
