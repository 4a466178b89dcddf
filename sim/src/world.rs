//! One world: a seed decides a fleet of devices, a few pushes (plain and rollouts, targets from lists and a group
//! that gains members), when each starts, what operators do, and which invocations die. The function's real handler
//! runs every invocation as a task on one thread, on tokio's paused clock, against the in-memory services; the
//! world plays Lambda around it (async retries, the queue's event source mapping, the sweeper's schedule, deadlines).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shadow_core::clock::Clock;
use shadow_core::push::quota::Senders;
use shadow_core::push::{Journal, PushRecord, PushStore};
use shadow_push::config::Config;
use shadow_push::handler::Services;
use shadow_runtime::event::Payload;
use tokio::task::JoinHandle;

use crate::devices::Kind;
use crate::dice::Dice;
use crate::invariants::{self, Facts, PushFacts, Violation};
use crate::queue::{Message, SimQueue};
use crate::registry::SimRegistry;
use crate::shadows::SimShadows;
use crate::trace::{INVOCATION, Trace};
use crate::witness::{Peek, Witness};

/// The epoch the world's clock starts at (ms).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// The group pushes target.
pub const GROUP: &str = "fleet";
/// The lease the function runs with: short, so that takeovers happen.
pub const LEASE_MS: u64 = 3_000;
/// The account's quotas (requests a second).
pub const UPDATE_QUOTA: u32 = 10;
pub const READ_QUOTA: u32 = 10;
/// The world stops by then (simulated ms); operators resume paused and stalled pushes at half of it.
const WORLD_MS: u64 = 600_000;
/// How often the world looks at what is due.
const TICK: Duration = Duration::from_millis(100);
/// The invariants are checked every this many ticks while the world runs, and at its end.
const CHECK_EVERY: u64 = 10;
/// The sweeper's schedule.
const SWEEP_EVERY_MS: u64 = 60_000;
/// The longest invocation (Lambda's timeout) and the queue's visibility timeout after it.
const LONGEST_INVOCATION_MS: u64 = 12_000;
const VISIBILITY_MS: u64 = LONGEST_INVOCATION_MS + 1_000;
/// Deliveries of one message before it goes to the dead-letter queue.
const MAX_RECEIVES: u32 = 8;

/// What a world found: its trace and every violation of an invariant.
pub struct Run {
    pub seed: u64,
    pub trace: String,
    pub violations: Vec<Violation>,
    /// Simulated ms the world ran.
    pub ran_ms: u64,
}

/// The push store a world runs on, built for each world (each seed).
pub trait StoreFactory {
    type Store: PushStore + Journal + Senders + Peek + Send + 'static;
    fn build(&self, seed: u64) -> Self::Store;
}

/// A push of the world: its request, when it starts, and what its operator does.
#[derive(Debug, Clone)]
struct PlannedPush {
    id: String,
    request: Value,
    start_ms: u64,
    /// `startPush` (answered at once, first segment from the queue) rather than an async invocation.
    queued: bool,
    controls: Vec<(u64, Value)>,
}

/// Why an invocation runs.
#[derive(Debug, Clone)]
enum Why {
    Start { push: usize, attempt: u32 },
    Queue(Message),
    Control,
    Sweep,
}

struct Running {
    id: u64,
    why: Why,
    handle: JoinHandle<Ended>,
}

/// How an invocation ended.
#[derive(Debug)]
enum Ended {
    Answered(Value),
    Failed(String),
    /// Killed: at its deadline, or at a random moment (a crash).
    Killed,
}

/// Runs the world of `seed`.
pub fn run<F: StoreFactory>(seed: u64, stores: &F) -> Run {
    shadow_core::chance::seed(seed);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            return Run {
                seed,
                trace: String::new(),
                violations: vec![Violation::new(seed, "the world", format!("no runtime: {e}"))],
                ran_ms: 0,
            };
        }
    };
    let local = tokio::task::LocalSet::new();
    let store = stores.build(seed);
    // The world's clock starts inside the runtime, on its paused time.
    local.block_on(&runtime, async move { World::new(seed, store).run().await })
}

struct World<P> {
    seed: u64,
    dice: Dice,
    trace: Trace,
    clock: Clock,
    shadows: SimShadows,
    registry: SimRegistry,
    queue: SimQueue,
    services: Arc<Services<SimShadows, SimRegistry, Witness<P>, SimQueue>>,
    notes: Arc<std::sync::Mutex<Vec<crate::witness::Note>>>,
    config: Arc<Config>,
    pushes: Vec<PlannedPush>,
    /// Things that join the group while pushes run: (when, thing).
    joiners: Vec<(u64, String)>,
    /// Members (first ones or joiners) that leave the group while pushes run: (when, thing).
    leavers: Vec<(u64, String)>,
    next_invocation: u64,
    /// Which push each invocation worked on, as far as the world knows.
    invoked_for: Rc<RefCell<BTreeMap<u64, String>>>,
    crash_percent: u64,
}

impl<P: PushStore + Journal + Senders + Peek + Send + 'static> World<P> {
    fn new(seed: u64, store: P) -> Self {
        let dice = Dice::new(seed);
        let clock = Clock::simulated(EPOCH_MS);
        let trace = Trace::new(clock, EPOCH_MS);
        let bake_ms = 8_000;
        let shadows = SimShadows::new(dice, trace.clone(), UPDATE_QUOTA, READ_QUOTA, bake_ms);
        let token_lifetime = dice.between("world:token-lifetime", 0, 2_000, 20_000);
        let registry = SimRegistry::new(trace.clone(), dice.between("world:page", 0, 2, 5) as usize, token_lifetime);
        let queue = SimQueue::new(dice, trace.clone(), 15, 5);
        let witness = Witness::new(store, trace.clone());
        let notes = witness.notes();
        let settings = HashMap::from([
            ("PUSH_TABLE", "sim-pushes".to_owned()),
            ("PUSH_QUEUE_URL", "sim-queue".to_owned()),
            ("PUSH_MAX_TPS", UPDATE_QUOTA.to_string()),
            ("PUSH_READ_TPS", READ_QUOTA.to_string()),
            ("PUSH_CONCURRENCY", "4".to_owned()),
            ("PUSH_LEASE_MS", LEASE_MS.to_string()),
            ("PUSH_HANDOFF_GRACE_MS", "10000".to_owned()),
            ("PUSH_ANSWER_MS", "2000".to_owned()),
        ]);
        let settings: HashMap<&str, &str> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = match Config::from_settings(&settings) {
            Ok(c) => c,
            // The settings are the world's own constants: they are valid.
            Err(e) => unreachable!("the simulation's settings are refused: {e}"),
        };
        let services = Services {
            shadows: shadows.clone(),
            registry: registry.clone(),
            store: witness,
            hand_off: queue.clone(),
            clock,
        };
        let mut world = Self {
            seed,
            dice,
            trace,
            clock,
            shadows,
            registry,
            queue,
            services: Arc::new(services),
            notes,
            config: Arc::new(config),
            pushes: Vec::new(),
            joiners: Vec::new(),
            leavers: Vec::new(),
            next_invocation: 0,
            invoked_for: Rc::default(),
            crash_percent: dice.between("world:crashes", 0, 0, 20),
        };
        world.build_fleet_and_pushes(bake_ms);
        world
    }

    /// The fleet (things with devices of every kind, most in the group), the joiners, the pushes and the operators'
    /// controls.
    fn build_fleet_and_pushes(&mut self, bake_ms: u64) {
        let d = self.dice;
        // One world in five has a fleet large enough for pushes to share the quota for seconds.
        let things = if d.chance("world:large", 0, 20) {
            d.between("world:things", 0, 20, 40)
        } else {
            d.between("world:things", 0, 4, 12)
        };
        for i in 0..things {
            let name = format!("thing-{i:02}");
            self.shadows.add(&name, kind(d, &name), &json!({"fw": "v0", "cfg": {"level": 0}}));
            self.registry.index(&name);
            if d.chance("world:in-group", i, 80) {
                self.registry.join(GROUP, &name);
            }
        }
        for j in 0..d.between("world:joiners", 0, 0, 3) {
            let name = format!("joiner-{j}");
            self.shadows.add(&name, kind(d, &name), &json!({"fw": "v0"}));
            self.registry.index(&name);
            self.joiners.push((d.between("world:join-at", j, 1_000, 40_000), name));
        }
        // Members that leave (unless `SIM_LEAVERS=0`): a first member from the start on, or a joiner after it joined.
        let first: Vec<String> = self.registry.members(GROUP).into_iter().map(|m| m.thing).collect();
        let leavers = if leavers_on() { d.between("world:leavers", 0, 0, 2) } else { 0 };
        for l in 0..leavers {
            let pick = d.below("world:leaver", l, (first.len() + self.joiners.len()) as u64) as usize;
            let leaver = match first.get(pick) {
                Some(thing) => Some((d.between("world:leave-at", l, 0, 40_000), thing.clone())),
                None => self
                    .joiners
                    .get(pick - first.len())
                    .map(|(at, thing)| (at + d.between("world:leave-at", l, 1, 30_000), thing.clone())),
            };
            if let Some((at, thing)) = leaver
                && self.leavers.iter().all(|(_, t)| *t != thing)
            {
                self.leavers.push((at, thing));
            }
        }
        for p in 0..d.between("world:pushes", 0, 1, 3) {
            let key = format!("push:{p}");
            let id = format!("push-{p}");
            let mut targets = serde_json::Map::new();
            match d.below(&key, 1, 3) {
                0 => {
                    targets.insert("thingGroup".into(), json!(GROUP));
                }
                1 => {
                    let listed: Vec<String> =
                        (0..things).filter(|i| d.chance(&key, 100 + i, 60)).map(|i| format!("thing-{i:02}")).collect();
                    targets.insert(
                        "things".into(),
                        json!(if listed.is_empty() { vec!["thing-00".to_owned()] } else { listed }),
                    );
                }
                _ => {
                    targets.insert("thingGroup".into(), json!(GROUP));
                    targets.insert("things".into(), json!([format!("thing-{:02}", d.below(&key, 2, things))]));
                }
            }
            // A quarter of pushes search the fleet index too (or instead of the group): the group's members, or
            // things by a prefix of their names.
            if d.chance(&key, 20, 25) {
                let query = if d.chance(&key, 21, 50) {
                    format!("thingGroupNames:{GROUP}")
                } else {
                    ["thingName:thing-0*", "thingName:thing-1*", "thingName:joiner-*"][d.below(&key, 22, 3) as usize]
                        .to_owned()
                };
                if d.chance(&key, 23, 50) {
                    targets.remove("thingGroup");
                }
                targets.insert("query".into(), json!(query));
            }
            let mut request = json!({
                "pushId": id,
                "desired": {"fw": format!("v{}", p + 1), "cfg": {"level": p + 1}},
                "targets": targets,
                "maxRequestsPerSecond": d.between(&key, 3, 2, u64::from(UPDATE_QUOTA)),
                "skipUnchanged": d.chance(&key, 17, 50),
            });
            if d.chance(&key, 4, 60) {
                let phases = if d.chance(&key, 5, 50) {
                    json!([{"percent": 50}, {"percent": 100}])
                } else {
                    json!([{"percent": 25}, {"percent": 60}, {"percent": 100}])
                };
                request["rollout"] = json!({
                    "phases": phases,
                    "bakeSeconds": d.between(&key, 6, 1, bake_ms / 1000),
                    "convergedPercent": d.between(&key, 7, 0, 60),
                    "failedPercent": 50,
                    "minThings": 1,
                    "onAbort": if d.chance(&key, 8, 50) { "rollback" } else { "stop" },
                });
                // A rollout cannot be a dry run (it would update nothing to judge): such a request is refused whole.
                if d.chance(&key, 18, 5) {
                    request["dryRun"] = json!(true);
                }
            } else if d.chance(&key, 18, 25) {
                // A dry run, half of them previewing the first push's values (so that some targets hold them).
                request["dryRun"] = json!(true);
                if p > 0 && d.chance(&key, 19, 50) {
                    request["desired"] = json!({"fw": "v1", "cfg": {"level": 1}});
                }
            }
            let start_ms = d.between(&key, 9, 0, 20_000);
            let mut controls = Vec::new();
            if d.chance(&key, 10, 35) {
                let at = start_ms + d.between(&key, 11, 0, 15_000);
                controls.push((at, json!({"pausePush": id})));
                controls.push((at + d.between(&key, 12, 500, 20_000), json!({"resumePush": id})));
            }
            if d.chance(&key, 13, 20) {
                let at = start_ms + d.between(&key, 14, 0, 40_000);
                let abort = match d.below(&key, 15, 3) {
                    0 => json!({"abortPush": id}),
                    1 => json!({"abortPush": id, "rollback": true}),
                    _ => json!({"abortPush": id, "rollback": false}),
                };
                controls.push((at, abort));
            }
            self.pushes.push(PlannedPush { id, request, start_ms, queued: d.chance(&key, 16, 30), controls });
        }
        for (i, p) in self.pushes.iter().enumerate() {
            self.trace.line(format!(
                "world: push {} at {} ms{}: {}",
                i,
                p.start_ms,
                if p.queued { " (startPush)" } else { "" },
                p.request
            ));
            for (at, c) in &p.controls {
                self.trace.line(format!("world: operator at {at} ms: {c}"));
            }
        }
        let fleet: Vec<String> = (0..things)
            .map(|i| format!("thing-{i:02}"))
            .chain(self.joiners.iter().map(|(_, t)| t.clone()))
            .map(|t| format!("{t} {:?}", self.shadows.kind(&t).unwrap_or(Kind::Healthy)))
            .collect();
        self.trace.line(format!(
            "world: seed {}, fleet [{}], group {:?}, joiners {:?}, leavers {:?}, crashes {} %",
            self.seed,
            fleet.join(", "),
            self.registry.members(GROUP).into_iter().map(|m| m.thing).collect::<Vec<_>>(),
            self.joiners,
            self.leavers,
            self.crash_percent
        ));
    }

    async fn run(mut self) -> Run {
        let mut running: Vec<Running> = Vec::new();
        let mut started = vec![false; self.pushes.len()];
        let mut retries: Vec<(u64, usize, u32)> = Vec::new();
        let mut controls: Vec<(u64, Value)> =
            self.pushes.iter().flat_map(|p| p.controls.iter().cloned()).collect::<Vec<_>>();
        controls.sort_by_key(|(at, _)| *at);
        let mut controls: std::collections::VecDeque<_> = controls.into();
        let mut joiners: std::collections::VecDeque<_> = {
            let mut j = self.joiners.clone();
            j.sort();
            j.into()
        };
        let mut leavers: std::collections::VecDeque<_> = {
            let mut l = self.leavers.clone();
            l.sort();
            l.into()
        };
        let mut next_sweep = SWEEP_EVERY_MS;
        let mut resumed_all = false;
        let mut violations = Vec::new();
        let mut ticks = 0u64;
        loop {
            let now = self.trace.now();
            // Pushes that start now: Lambda's async invocation, or the CLI's startPush.
            for (i, p) in self.pushes.clone().iter().enumerate() {
                if !started[i] && p.start_ms <= now {
                    started[i] = true;
                    let payload = if p.queued { json!({"startPush": p.request}) } else { p.request.clone() };
                    running.push(self.invoke(Why::Start { push: i, attempt: 0 }, payload, Some(p.id.clone())));
                }
            }
            retries.retain(|&(at, push, attempt)| {
                if at > now {
                    return true;
                }
                let p = &self.pushes[push];
                let payload = if p.queued { json!({"startPush": p.request}) } else { p.request.clone() };
                running.push(self.invoke(Why::Start { push, attempt }, payload, Some(p.id.clone())));
                false
            });
            while controls.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, control)) = controls.pop_front() else { break };
                let push_id = ["pausePush", "resumePush", "abortPush"]
                    .iter()
                    .find_map(|k| control.get(*k).and_then(Value::as_str))
                    .unwrap_or_default()
                    .to_owned();
                running.push(self.invoke(Why::Control, control, Some(push_id)));
            }
            while joiners.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, thing)) = joiners.pop_front() else { break };
                self.registry.join(GROUP, &thing);
                self.trace.line(format!("registry: {thing} joined {GROUP}"));
            }
            while leavers.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, thing)) = leavers.pop_front() else { break };
                if self.registry.leave(GROUP, &thing) {
                    self.trace.line(format!("registry: {thing} left {GROUP}"));
                }
            }
            for message in self.queue.due() {
                if message.received >= MAX_RECEIVES {
                    self.trace.line(format!("queue: m{} to the dead-letter queue", message.id));
                    continue;
                }
                let push_id = message.push_id.clone();
                running.push(self.invoke(Why::Queue(message.clone()), message.event(), Some(push_id)));
            }
            if now >= next_sweep {
                next_sweep += SWEEP_EVERY_MS;
                running.push(self.invoke(Why::Sweep, json!({"sweepPushes": true}), None));
            }
            // Half way, the operators resume what is paused or stalled, so that every push can finish.
            if !resumed_all && now >= WORLD_MS / 2 {
                resumed_all = true;
                for p in self.pushes.clone() {
                    running.push(self.invoke(Why::Control, json!({"resumePush": p.id}), Some(p.id.clone())));
                }
            }
            // Invocations that ended.
            let mut still = Vec::new();
            for r in running.drain(..) {
                if !r.handle.is_finished() {
                    still.push(r);
                    continue;
                }
                let ended = r.handle.await.unwrap_or_else(|e| Ended::Failed(format!("the task panicked: {e}")));
                if let Ended::Failed(why) = &ended
                    && why.starts_with("the task panicked")
                {
                    violations.push(Violation::new(self.seed, "no panic", format!("invocation {}: {why}", r.id)));
                }
                self.ended(r.id, &r.why, &ended, &mut retries);
            }
            running = still;
            ticks += 1;
            if ticks.is_multiple_of(CHECK_EVERY) {
                let online = invariants::online(&self.facts());
                if !online.is_empty() {
                    violations.extend(online);
                    break;
                }
            }
            let finished = self.all_final().await;
            if (finished
                && running.is_empty()
                && self.queue.is_empty()
                && retries.is_empty()
                && started.iter().all(|s| *s)
                && controls.is_empty())
                || now >= WORLD_MS
            {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        for r in &running {
            r.handle.abort();
        }
        let ran_ms = self.trace.now();
        if violations.is_empty() {
            let mut facts = self.facts();
            facts.finals = self.finals().await;
            violations.extend(invariants::at_end(&facts));
        }
        Run { seed: self.seed, trace: self.trace.render(), violations, ran_ms }
    }

    /// Starts an invocation as a task with its deadline; it dies at the deadline, or earlier as the seed says.
    fn invoke(&mut self, why: Why, payload: Value, push: Option<String>) -> Running {
        self.next_invocation += 1;
        let id = self.next_invocation;
        if let Some(push) = push {
            self.invoked_for.borrow_mut().insert(id, push);
        }
        let key = format!("invocation:{id}");
        // Whole tens of ms: the handler's deadline arrives through the wall clock (shadow_runtime::deadline), within a
        // millisecond of the simulated one, and its fractions of it (hand-off margin, reserve) then fall within the
        // same millisecond tick at every run.
        let timeout_ms = self.dice.between(&key, 0, 300, LONGEST_INVOCATION_MS / 10) * 10;
        let kill_ms = if self.dice.chance(&key, 1, self.crash_percent) {
            self.dice.between(&key, 2, 0, timeout_ms)
        } else {
            timeout_ms
        };
        self.trace.line(format!(
            "invocation {id} ({why:?}): timeout {timeout_ms} ms{}",
            if kill_ms < timeout_ms { format!(", dies at {kill_ms} ms") } else { String::new() }
        ));
        let mut context = Context::default();
        context.request_id = format!("sim-{id}");
        context.deadline = wall_ms() + timeout_ms + 1;
        let event = LambdaEvent::new(Payload::from(payload), context);
        let (services, config) = (self.services.clone(), self.config.clone());
        let run = INVOCATION.scope(id, async move {
            match tokio::time::timeout(Duration::from_millis(kill_ms), services.handle(&config, event)).await {
                Ok(Ok(value)) => Ended::Answered(value),
                Ok(Err(e)) => Ended::Failed(e.to_string()),
                Err(_) => Ended::Killed,
            }
        });
        Running { id, why, handle: tokio::task::spawn_local(run) }
    }

    /// What Lambda does after an invocation ends: the queue's message deleted or put back, a failed async start
    /// retried (twice).
    fn ended(&mut self, id: u64, why: &Why, ended: &Ended, retries: &mut Vec<(u64, usize, u32)>) {
        let text = match ended {
            Ended::Answered(v) => format!("answered {}", short(v)),
            Ended::Failed(e) => format!("failed: {e}"),
            Ended::Killed => "killed".to_owned(),
        };
        self.trace.line(format!("invocation {id} ended: {text}"));
        match why {
            Why::Queue(message) => {
                let failed = match ended {
                    Ended::Answered(v) => v["batchItemFailures"].as_array().is_some_and(|f| !f.is_empty()),
                    _ => true,
                };
                if failed {
                    self.queue.redeliver(message.clone(), VISIBILITY_MS);
                }
            }
            Why::Start { push, attempt } => {
                if !matches!(ended, Ended::Answered(_)) && *attempt < 2 && !self.pushes[*push].queued {
                    let at = self.trace.now()
                        + self.dice.between(&format!("retry:{push}"), u64::from(*attempt), 2_000, 8_000);
                    retries.push((at, *push, attempt + 1));
                }
            }
            Why::Control | Why::Sweep => {}
        }
    }

    fn facts(&self) -> Facts {
        let notes = self.notes.lock().map(|n| n.clone()).unwrap_or_default();
        let pushes = self.pushes.iter().map(|p| PushFacts { id: p.id.clone(), request: p.request.clone() }).collect();
        Facts {
            seed: self.seed,
            pushes,
            notes,
            writes: self.shadows.writes(),
            reads: self.shadows.reads(),
            seconds: self.shadows.seconds(),
            update_quota: self.shadows.update_quota(),
            renew_every_ms: LEASE_MS / 3,
            group: self.registry.members(GROUP),
            listings: self.registry.listings(),
            refusals: self.registry.refusals(),
            index: self.registry.indexed(),
            invoked_for: self.invoked_for.borrow().clone(),
            finals: BTreeMap::new(),
            now_ms: self.trace.now(),
            epoch_now_ms: self.clock.now_ms(),
        }
    }

    async fn records(&self) -> BTreeMap<String, PushRecord> {
        let mut records = BTreeMap::new();
        for p in &self.pushes {
            if let Some(record) = self.services.store.store.peek(&p.id) {
                records.insert(p.id.clone(), record);
            }
        }
        records
    }

    async fn all_final(&self) -> bool {
        let records = self.records().await;
        self.pushes.iter().all(|p| records.get(&p.id).is_none_or(|r| r.status.state.is_final()))
    }

    async fn finals(&self) -> BTreeMap<String, PushRecord> {
        self.records().await
    }
}

/// A device kind for `thing`: half healthy, the rest spread over the other five.
fn kind(d: Dice, thing: &str) -> Kind {
    match d.below(&format!("kind:{thing}"), 0, 10) {
        0..=4 => Kind::Healthy,
        5 => Kind::Silent,
        6 => Kind::Refusing,
        7 => Kind::Clearing,
        8 => Kind::Partial,
        _ => Kind::Late,
    }
}

/// Whether worlds draw members that leave the group: yes, unless `SIM_LEAVERS=0` (the worlds the planted bugs of
/// docs/simulation.md were first found in, before members left by default).
pub fn leavers_on() -> bool {
    std::env::var_os("SIM_LEAVERS").is_none_or(|v| v != "0")
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 160 {
        format!("{}…", &text[..text.char_indices().nth(160).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// The in-memory push store, failing a few calls of each kind as the seed says: throttled (nothing written), or
/// timed out after the write took effect (its answer lost).
pub struct MemoryStores {
    /// Percent of calls that fail.
    pub fault_percent: u64,
}

impl StoreFactory for MemoryStores {
    type Store = crate::store::MemoryStore;

    fn build(&self, seed: u64) -> Self::Store {
        let store = crate::store::MemoryStore::new();
        let dice = Dice::new(seed);
        let percent = self.fault_percent;
        let mut calls: BTreeMap<crate::store::Op, u64> = BTreeMap::new();
        store.set_faults(Box::new(move |op| {
            let n = calls.entry(op).or_default();
            *n += 1;
            let key = format!("store:{op:?}");
            if !dice.chance(&key, *n, percent) {
                return None;
            }
            Some(if dice.chance(&key, *n + 1_000_000, 50) {
                crate::store::Fault::throttled(op)
            } else {
                crate::store::Fault::timed_out(op)
            })
        }));
        store
    }
}

/// Runs the world of `seed` on the in-memory store, with its faults.
pub fn run_seed(seed: u64) -> Run {
    run(seed, &MemoryStores { fault_percent: 2 })
}
