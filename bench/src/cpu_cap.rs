//! Lambda's CPU share for a function's process. Lambda gives a function CPU in proportion to its memory: at
//! 1769 MB the equivalent of one vCPU, so at the template's `MemorySize` of M MB a share of M ÷ 1769 of a core. The
//! bench runs each function's process in a cgroup whose `cpu` controller holds it to that share (CFS bandwidth: a
//! quota of share × period per period of 100 ms, the kernel's default), so a figure is the function's on Lambda, not
//! on a whole core of this machine.
//!
//! The process joins the cgroup before it execs (a `sh` that writes its own pid into the group, then `exec`s the
//! binary), so the cold start and every thread it starts are capped, and a process started again after a crash is
//! too. Where no cgroup can be made (no `cpu` controller, not root), the bench runs uncapped and says so beside every
//! figure of that function.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::process::Command;

/// Lambda's memory for one vCPU's worth of CPU (AWS Lambda developer guide, "Lambda memory and computing power").
pub const MB_PER_VCPU: f64 = 1769.0;
/// The CFS period: the kernel's default.
const PERIOD_US: u64 = 100_000;
/// The variable that turns the cap off (`none`) for a whole run; anything else, or unset, caps.
pub const CAP_VAR: &str = "FLEET_BENCH_CPU_CAP";
/// The share of the periods the cap throttled at or above which a figure is marked bound by the cap.
pub const CAP_BOUND: f64 = 0.5;

/// The cpu controller's two kinds of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// cgroup v1: `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1,
    /// cgroup v2: `cpu.max` ("quota period").
    V2,
}

/// Where this machine's cpu controller is mounted, if anywhere.
fn controller() -> Result<(PathBuf, Version), String> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok((v1.to_owned(), Version::V1));
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "cpu") {
        // A child's cpu.max exists only when the parent hands the controller down.
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        return Ok((v2.to_owned(), Version::V2));
    }
    Err("no cgroup cpu controller: neither /sys/fs/cgroup/cpu/cpu.cfs_quota_us (v1) nor cpu in \
         /sys/fs/cgroup/cgroup.controllers (v2)"
        .into())
}

/// How often the cap held the process back, from the group's `cpu.stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled: u64,
    pub throttled_seconds: f64,
}

impl Throttling {
    /// The share of the periods in which the process used its whole quota and waited.
    pub fn share(&self) -> f64 {
        self.throttled as f64 / self.periods.max(1) as f64
    }

    /// Parses a `cpu.stat` (v1: `throttled_time` in ns; v2: `throttled_usec`).
    fn parse(stat: &str) -> Self {
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let throttled_seconds = match (field("throttled_time"), field("throttled_usec")) {
            (Some(ns), _) => ns as f64 / 1e9,
            (None, Some(us)) => us as f64 / 1e6,
            (None, None) => 0.0,
        };
        Self {
            periods: field("nr_periods").unwrap_or(0),
            throttled: field("nr_throttled").unwrap_or(0),
            throttled_seconds,
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            periods: self.periods.saturating_sub(before.periods),
            throttled: self.throttled.saturating_sub(before.throttled),
            throttled_seconds: (self.throttled_seconds - before.throttled_seconds).max(0.0),
        }
    }
}

/// A function's CPU cap: Lambda's share at its memory, or none (and why).
pub struct CpuCap {
    pub memory_mb: u32,
    /// The share of one core Lambda gives at `memory_mb`.
    pub cores: f64,
    group: Option<PathBuf>,
    /// Why the process runs uncapped: turned off, or the cgroup could not be made.
    pub uncapped: Option<String>,
    before: Throttling,
}

impl CpuCap {
    /// The share Lambda gives at `memory_mb`, as a fraction of one core.
    pub fn share(memory_mb: u32) -> f64 {
        f64::from(memory_mb) / MB_PER_VCPU
    }

    /// No cap, saying why.
    pub fn none(memory_mb: u32, why: &str) -> Self {
        Self {
            memory_mb,
            cores: Self::share(memory_mb),
            group: None,
            uncapped: Some(why.into()),
            before: Throttling::default(),
        }
    }

    /// A new cgroup named for `function` holding its process to Lambda's share at `memory_mb`; uncapped (and why)
    /// when the machine has no writable cpu controller.
    pub fn lambda(function: &str, memory_mb: u32) -> Self {
        match Self::make(function, memory_mb) {
            Ok(group) => {
                let before = Throttling::parse(&std::fs::read_to_string(group.join("cpu.stat")).unwrap_or_default());
                Self { memory_mb, cores: Self::share(memory_mb), group: Some(group), uncapped: None, before }
            }
            Err(why) => {
                println!("  NOT CAPPED: {function} runs on whole cores: {why}");
                Self::none(memory_mb, &format!("could not cap: {why}"))
            }
        }
    }

    /// The cap the run asks for ([`CAP_VAR`]): Lambda's share, or none.
    pub fn for_run(function: &str, memory_mb: u32) -> Self {
        match std::env::var(CAP_VAR).as_deref() {
            Ok("none") => Self::none(memory_mb, &format!("{CAP_VAR}=none")),
            _ => Self::lambda(function, memory_mb),
        }
    }

    fn make(function: &str, memory_mb: u32) -> Result<PathBuf, String> {
        let (root, version) = controller()?;
        let group = root.join(format!("fleet-bench-{}-{function}", std::process::id()));
        std::fs::create_dir_all(&group).map_err(|e| format!("mkdir {}: {e}", group.display()))?;
        let quota = (Self::share(memory_mb) * PERIOD_US as f64).round() as u64;
        let write = |file: &str, value: String| {
            std::fs::write(group.join(file), &value).map_err(|e| format!("writing {value} to {file}: {e}"))
        };
        let made = match version {
            Version::V1 => write("cpu.cfs_period_us", PERIOD_US.to_string())
                .and_then(|()| write("cpu.cfs_quota_us", quota.to_string())),
            Version::V2 => write("cpu.max", format!("{quota} {PERIOD_US}")),
        };
        if let Err(e) = made {
            let _ = std::fs::remove_dir(&group);
            return Err(e);
        }
        Ok(group)
    }

    pub fn is_capped(&self) -> bool {
        self.group.is_some()
    }

    /// A command that runs `program` inside the cap: `sh` puts itself into the group, then becomes `program`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let Some(group) = &self.group else { return Command::new(program) };
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(group.join("cgroup.procs")).arg(program.as_ref());
        command
    }

    /// How often the cap held the process back since it was made.
    pub fn throttling(&self) -> Option<Throttling> {
        let stat = std::fs::read_to_string(self.group.as_ref()?.join("cpu.stat")).ok()?;
        Some(Throttling::parse(&stat).since(&self.before))
    }

    /// For a figure's bound column: the cap, and how often it throttled.
    pub fn describe(&self) -> String {
        match (&self.uncapped, self.throttling()) {
            (Some(why), _) => format!("UNCAPPED ({why})"),
            (None, Some(t)) => format!(
                "capped at {:.2} vCPU ({} MB), throttled {}/{} periods{}",
                self.cores,
                self.memory_mb,
                t.throttled,
                t.periods,
                if t.share() >= CAP_BOUND { ": CAP-BOUND" } else { "" }
            ),
            (None, None) => format!("capped at {:.2} vCPU ({} MB)", self.cores, self.memory_mb),
        }
    }

    pub fn to_json(&self) -> Value {
        let t = self.throttling();
        json!({"capped": self.is_capped(), "memory_mb": self.memory_mb, "vcpu_share": self.cores,
               "period_us": PERIOD_US, "uncapped_because": self.uncapped,
               "periods": t.map(|t| t.periods), "throttled_periods": t.map(|t| t.throttled),
               "throttled_seconds": t.map(|t| t.throttled_seconds),
               "cap_bound": t.map(|t| t.share() >= CAP_BOUND)})
    }
}

impl Drop for CpuCap {
    /// Removes the group (the kernel refuses while a process is still in it; the function is stopped first).
    fn drop(&mut self) {
        if let Some(group) = &self.group {
            let _ = std::fs::remove_dir(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_share_is_memory_over_1769_mb() {
        assert!((CpuCap::share(1769) - 1.0).abs() < 1e-9);
        assert!((CpuCap::share(1024) - 0.5789).abs() < 1e-3);
        assert!((CpuCap::share(256) - 0.1447).abs() < 1e-3);
    }

    #[test]
    fn throttling_is_read_from_either_versions_cpu_stat() {
        let v1 = "nr_periods 1362\nnr_throttled 849\nthrottled_time 25000000000\nnr_bursts 0\n";
        let t = Throttling::parse(v1);
        assert_eq!((t.periods, t.throttled), (1362, 849));
        assert!((t.throttled_seconds - 25.0).abs() < 1e-9);
        let v2 = "usage_usec 10\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2000000\n";
        let t = Throttling::parse(v2);
        assert_eq!((t.periods, t.throttled), (10, 4));
        assert!((t.throttled_seconds - 2.0).abs() < 1e-9 && (t.share() - 0.4).abs() < 1e-9);
    }

    /// A busy loop in the cap for a second and a half uses no more than the share (and the cap says it throttled);
    /// on a machine without a writable cpu controller, the cap says why instead.
    #[test]
    fn a_busy_process_in_the_cap_gets_lambdas_share() {
        let cap = CpuCap::lambda("cap-test", 256);
        let Some(group) = cap.group.clone() else {
            assert!(
                cap.uncapped.as_deref().is_some_and(|why| why.starts_with("could not cap: ")),
                "{:?}",
                cap.uncapped
            );
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let used = runtime.block_on(async {
            let mut command = cap.command("/bin/sh");
            command.args(["-c", "while :; do :; done"]).kill_on_drop(true);
            let mut child = command.spawn().expect("spawning the busy loop");
            let pid = child.id().expect("its pid");
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("its stat");
            let fields: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, f)| f.split_whitespace().filter_map(|v| v.parse().ok()).collect())
                .unwrap_or_default();
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
            assert!(procs.lines().any(|p| p.trim() == pid.to_string()), "{pid} is not in the group: {procs}");
            let _ = child.kill().await;
            // utime and stime (the 14th and 15th fields; 11th and 12th after the state) in ticks of 10 ms.
            (fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)) as f64 / 100.0
        });
        // 0.145 of a core for 1.5 s is 0.22 s; a whole core would be 1.5 s.
        assert!(used <= 0.35, "the capped loop used {used} s of CPU in 1.5 s");
        let t = cap.throttling().expect("the group's cpu.stat");
        assert!(t.throttled > 0 && t.periods >= t.throttled, "{t:?}");
    }

    #[test]
    fn an_uncapped_run_says_why() {
        let cap = CpuCap::none(1024, "FLEET_BENCH_CPU_CAP=none");
        assert!(!cap.is_capped());
        assert_eq!(cap.describe(), "UNCAPPED (FLEET_BENCH_CPU_CAP=none)");
        assert_eq!(cap.command("/bin/true").as_std().get_program(), "/bin/true");
    }
}
