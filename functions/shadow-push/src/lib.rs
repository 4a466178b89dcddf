//! shadow-push as a library: its settings and its handler, for the function's `main` and for running the real
//! handler in one process (the deterministic simulation).

pub mod config;
pub mod handler;
