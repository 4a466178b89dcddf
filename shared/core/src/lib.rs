//! The pure core of shadow-fleet: what a shadow event means, how it is recorded, what a push asks for and
//! how it is paced. No AWS SDK and no Lambda types live here, so everything in it is tested without an emulator.

pub mod chance;
pub mod clock;
pub mod document;
pub mod drift;
pub mod history;
pub mod names;
pub mod push;
pub mod retry;
pub mod service;
pub mod topic;

pub use names::{NameError, ShadowName, ShadowRef, ThingGroupName, ThingName};
