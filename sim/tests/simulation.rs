//! The deterministic simulation (docs/simulation.md): thousands of worlds, each the function's real handler under
//! crashes, races, redelivery and devices of six kinds, held to the push's invariants.
//!
//! `SIM_SEEDS=n` runs n seeds (default 1000) from `SIM_FIRST` (default 0); `SIM_SEED=s` runs one, printing its
//! trace.

use std::time::Instant;

use fleet_sim::world::{Run, run_seed};

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("{name}={value:?} is not a number: {e}"),
    }
}

fn report(run: &Run) -> String {
    let violations: Vec<String> = run.violations.iter().map(ToString::to_string).collect();
    format!(
        "{}\n\n{} violation(s) in seed {} ({} ms simulated):\n  {}\n\nreplay it: SIM_SEED={} cargo test -p fleet-sim --test simulation -- seeds --nocapture",
        run.trace,
        run.violations.len(),
        run.seed,
        run.ran_ms,
        violations.join("\n  "),
        run.seed
    )
}

#[test]
fn seeds() {
    if let Some(seed) = env("SIM_SEED") {
        let run = run_seed(seed);
        println!("{}", run.trace);
        assert!(run.violations.is_empty(), "{}", report(&run));
        println!("seed {seed}: no violation ({} ms simulated)", run.ran_ms);
        return;
    }
    let first = env("SIM_FIRST").unwrap_or(0);
    let count = env("SIM_SEEDS").unwrap_or(1000);
    let started = Instant::now();
    let mut simulated_ms = 0;
    for seed in first..first + count {
        let run = run_seed(seed);
        simulated_ms += run.ran_ms;
        assert!(
            run.violations.is_empty(),
            "{}\n(found after {:.1} s of wall time, {} seeds)",
            report(&run),
            started.elapsed().as_secs_f64(),
            seed - first + 1
        );
    }
    println!(
        "{count} seeds from {first}: no violation; {:.0} simulated minutes in {:.1} s",
        simulated_ms as f64 / 60_000.0,
        started.elapsed().as_secs_f64()
    );
}

/// A seed is a world: run twice, it does the same things at the same simulated times.
#[test]
fn a_seed_replays_the_same_trace() {
    for seed in [3, 11, 42] {
        let (one, two) = (run_seed(seed), run_seed(seed));
        assert!(one.trace.lines().count() > 20, "seed {seed} did too little to compare:\n{}", one.trace);
        if one.trace != two.trace {
            let diverged = one.trace.lines().zip(two.trace.lines()).position(|(a, b)| a != b).unwrap_or(0);
            let around = |t: &str| t.lines().skip(diverged.saturating_sub(3)).take(6).collect::<Vec<_>>().join("\n");
            panic!("seed {seed} ran differently from line {diverged}:\n{}\n---\n{}", around(&one.trace), around(&two.trace));
        }
    }
}
