//! The deterministic simulation of shadow-push (docs/simulation.md): the function's real handler runs in one process
//! on tokio's paused clock against in-memory AWS, and a seed decides every interleaving, crash, delay and device.

pub mod devices;
pub mod dice;
pub mod invariants;
pub mod queue;
pub mod registry;
pub mod shadows;
pub mod store;
pub mod trace;
pub mod witness;
pub mod world;
