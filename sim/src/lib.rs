//! The deterministic simulation of shadow-push (docs/simulation.md): the function's real handler runs in one process
//! on tokio's paused clock against in-memory AWS, and a seed decides every interleaving, crash, delay and device.

pub mod store;
