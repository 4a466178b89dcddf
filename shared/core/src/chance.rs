//! Where the core's randomness comes from (jitter, backoff, owner tokens): one generator per thread, seeded from the
//! operating system, or from a number ([`seed`]) so that a simulation run on one thread replays exactly.

use std::cell::RefCell;

use rand::SeedableRng;
use rand::rngs::StdRng;

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

/// Seeds this thread's generator: every draw after it, on this thread, follows from `seed`.
pub fn seed(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// Runs `draw` with this thread's generator.
pub fn with<T>(draw: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|rng| draw(&mut rng.borrow_mut()))
}

/// A random 128-bit token in hex: a claim's owner, a segment's identity.
pub fn token() -> String {
    with(|rng| {
        use rand::Rng;
        format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_draws() {
        seed(7);
        let first = (token(), token());
        seed(7);
        assert_eq!((token(), token()), first);
        seed(8);
        assert_ne!(token(), first.0);
    }
}
