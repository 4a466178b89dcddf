//! What bound a figure: the CPU the function used, the stand-ins' share (this bench process, which hosts them, and
//! the emulators' processes), and how busy the machine was, sampled over the run. A figure taken while the machine's
//! cores were all but fully busy is the machine's, not the function's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The machine's busy share (of all its cores) at or above which a figure is marked machine-bound.
pub const MACHINE_BOUND: f64 = 0.90;
const EVERY: Duration = Duration::from_millis(500);
/// Linux reports process CPU in USER_HZ, 100 on every architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a process, in ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// (busy, total) jiffies of all cores, from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// CPU ticks per process id, summed across restarts (a new process counts from zero).
#[derive(Default)]
struct ProcessCpu {
    seen: HashMap<u32, u64>,
    first: HashMap<u32, u64>,
}

impl ProcessCpu {
    fn sample(&mut self, pid: u32, at_start: bool) {
        if pid == 0 {
            return;
        }
        if let Some(ticks) = process_ticks(&pid.to_string()) {
            self.first.entry(pid).or_insert(if at_start { ticks } else { 0 });
            self.seen.insert(pid, ticks);
        }
    }

    fn ticks(&self) -> u64 {
        self.seen.iter().map(|(pid, t)| t.saturating_sub(self.first.get(pid).copied().unwrap_or(0))).sum()
    }
}

#[derive(Default)]
struct Samples {
    function: ProcessCpu,
    rss: Vec<(f64, u64)>,
    loads: Vec<f64>,
}

/// Samples a run until [`Meter::finish`].
pub struct Meter {
    started: Instant,
    machine: Option<(u64, u64)>,
    bench: Option<u64>,
    emulators: Vec<(String, u64)>,
    function: Arc<AtomicU32>,
    samples: Arc<Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a run used, and whether the machine bound it.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub seconds: f64,
    /// The function's processes' CPU, in cores (CPU seconds per second of the run).
    pub function_cores: f64,
    /// The function's processes' CPU over the run, in seconds.
    pub function_cpu_seconds: f64,
    /// The CPU cap the function ran under, and how often it throttled ([`crate::cpu_cap::CpuCap::describe`]).
    pub cap: Option<String>,
    pub cap_json: Value,
    /// This process's CPU (the stand-ins it hosts, and the bench's own driving), in cores.
    pub bench_cores: f64,
    /// DynamoDB Local's and moto's CPU, in cores.
    pub emulator_cores: f64,
    /// All cores' busy share, 0..1.
    pub machine_busy: f64,
    pub cores: f64,
    pub load_mean: f64,
    pub load_max: f64,
    pub peak_rss: u64,
    /// The function's RSS at tenths of the run.
    pub rss_profile: Vec<u64>,
}

impl Usage {
    /// The same usage, with the cap the function ran under.
    pub fn capped_by(mut self, cap: &crate::cpu_cap::CpuCap) -> Self {
        self.cap = Some(cap.describe());
        self.cap_json = cap.to_json();
        self
    }

    pub fn machine_bound(&self) -> bool {
        self.machine_busy >= MACHINE_BOUND
    }

    /// One line for the table: the function's cores, the stand-ins', the machine's busy share and load.
    pub fn describe(&self) -> String {
        let bound = if self.machine_bound() { ": MACHINE-BOUND" } else { "" };
        let cap = self.cap.as_ref().map(|c| format!("; {c}")).unwrap_or_default();
        format!(
            "fn {:.2} cores, stand-ins+bench {:.2}, emulators {:.2}, machine {:.0}% busy of {} (load {:.1}){bound}{cap}",
            self.function_cores,
            self.bench_cores,
            self.emulator_cores,
            self.machine_busy * 100.0,
            self.cores,
            self.load_mean
        )
    }

    pub fn to_json(&self) -> Value {
        json!({"seconds": self.seconds, "function_cores": self.function_cores,
               "function_cpu_seconds": self.function_cpu_seconds, "cpu_cap": self.cap_json, "bench_and_standin_cores": self.bench_cores,
               "emulator_cores": self.emulator_cores, "machine_busy_share": self.machine_busy, "cores": self.cores,
               "load_mean": self.load_mean, "load_max": self.load_max, "machine_bound": self.machine_bound(),
               "function_peak_rss_mb": self.peak_rss as f64 / 1048576.0,
               "function_rss_mb_by_tenth": self.rss_profile.iter().map(|b| (*b as f64 / 104857.6).round() / 10.0).collect::<Vec<_>>()})
    }
}

/// The emulators' pids from the stack's state directory (`.local/<name>.pid`, or `$STACK_STATE_DIR`).
fn emulator_pids(root: &Path) -> Vec<String> {
    let state = root.join(std::env::var_os("STACK_STATE_DIR").unwrap_or_else(|| ".local".into()));
    ["dynamodb", "moto"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(state.join(format!("{name}.pid"))).ok())
        .map(|pid| pid.trim().to_owned())
        .collect()
}

impl Meter {
    /// Starts sampling the function whose current pid `function` holds (kept current across restarts).
    pub fn start(root: &Path, function: Arc<AtomicU32>) -> Self {
        let samples = Arc::new(Mutex::new(Samples::default()));
        if let Ok(mut s) = samples.lock() {
            s.function.sample(function.load(Ordering::SeqCst), true);
        }
        let started = Instant::now();
        let task = {
            let (samples, function) = (samples.clone(), function.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(EVERY).await;
                    let pid = function.load(Ordering::SeqCst);
                    let Ok(mut s) = samples.lock() else { return };
                    s.function.sample(pid, false);
                    if let Some(rss) = rss_bytes(pid) {
                        s.rss.push((started.elapsed().as_secs_f64(), rss));
                    }
                    if let Some(load) = load_average() {
                        s.loads.push(load);
                    }
                }
            })
        };
        let emulators =
            emulator_pids(root).into_iter().filter_map(|pid| process_ticks(&pid).map(|t| (pid, t))).collect();
        Self { started, machine: machine_jiffies(), bench: process_ticks("self"), emulators, function, samples, task }
    }

    pub fn finish(self) -> Usage {
        self.task.abort();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let Ok(mut s) = self.samples.lock() else { return Usage::default() };
        s.function.sample(self.function.load(Ordering::SeqCst), false);
        let cores = cores();
        let per_second = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let machine_busy = match (self.machine, machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        let bench = match (self.bench, process_ticks("self")) {
            (Some(a), Some(b)) => per_second(b.saturating_sub(a)),
            _ => 0.0,
        };
        let emulators: u64 =
            self.emulators.iter().filter_map(|(pid, t0)| process_ticks(pid).map(|t1| t1.saturating_sub(*t0))).sum();
        let peak_rss = s.rss.iter().map(|(_, r)| *r).max().unwrap_or(0);
        let rss_profile = (1..=10)
            .filter_map(|tenth| {
                let at = seconds * f64::from(tenth) / 10.0;
                s.rss.iter().rev().find(|(t, _)| *t <= at).map(|(_, r)| *r)
            })
            .collect();
        let loads = &s.loads;
        Usage {
            seconds,
            function_cores: per_second(s.function.ticks()),
            function_cpu_seconds: s.function.ticks() as f64 / TICKS_PER_SECOND,
            cap: None,
            cap_json: Value::Null,
            bench_cores: bench,
            emulator_cores: per_second(emulators),
            machine_busy,
            cores,
            load_mean: if loads.is_empty() { 0.0 } else { loads.iter().sum::<f64>() / loads.len() as f64 },
            load_max: loads.iter().copied().fold(0.0, f64::max),
            peak_rss,
            rss_profile,
        }
    }
}

/// A function whose invocations are timed, as Lambda bills them: each one's duration, rounded up to the millisecond,
/// by what invoked it.
pub struct Timed<F> {
    inner: F,
    log: Mutex<Vec<(InvokedBy, Duration)>>,
    /// One invocation at a time, as the execution environment runs them: the wait for the turn is not billed.
    turn: tokio::sync::Mutex<()>,
}

/// What an invocation carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokedBy {
    /// The schedule's sweep (every minute, whether a push runs or not).
    Sweep,
    /// A hand-off message through the queue's event source mapping.
    Queue,
    /// Anything else (a push request).
    Direct,
}

impl<F> Timed<F> {
    pub fn new(inner: F) -> Self {
        Self { inner, log: Mutex::new(Vec::new()), turn: tokio::sync::Mutex::new(()) }
    }

    /// Invocations and their billed seconds, of those `which` takes.
    pub fn billed(&self, which: impl Fn(InvokedBy) -> bool) -> (u64, f64) {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let taken: Vec<Duration> = log.into_iter().filter(|(by, _)| which(*by)).map(|(_, d)| d).collect();
        let seconds = taken.iter().map(|d| (d.as_secs_f64() * 1000.0).ceil() / 1000.0).sum();
        (taken.len() as u64, seconds)
    }
}

impl<F: devstack::lambda::Function> devstack::lambda::Function for Timed<F> {
    fn invoke(&self, payload: &Value, timeout: Duration) -> impl Future<Output = devstack::lambda::Answer> + Send {
        let by = if payload.get("sweepPushes").is_some() {
            InvokedBy::Sweep
        } else if payload.get("Records").is_some() {
            InvokedBy::Queue
        } else {
            InvokedBy::Direct
        };
        async move {
            let _turn = self.turn.lock().await;
            let started = Instant::now();
            let answer = self.inner.invoke(payload, timeout).await;
            if let Ok(mut log) = self.log.lock() {
                log.push((by, started.elapsed()));
            }
            answer
        }
    }
}
