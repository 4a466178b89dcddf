//! What must hold in every world, checked while it runs ([`online`]) and at its end ([`at_end`]), from what the
//! in-memory services saw: the shadows' accepted writes (each with the invocation that made it), the store writes
//! that took effect, the registry's listings and the requests of each simulated second. Each violation names the
//! seed, the invariant and its evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;
use shadow_core::push::rollout::ROLLBACK_SUFFIX;
use shadow_core::push::{Control, PushRecord, PushState};

use crate::devices;
use crate::registry::{self, Listing, Member};
use crate::shadows::{Read, Second, Write};
use crate::witness::{Note, Noted};

/// A request may still land this long after the segment that sent it stopped starting requests (the simulated
/// data plane's longest latency before an update applies, and a margin).
const IN_FLIGHT_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub invariant: &'static str,
    pub evidence: String,
}

impl Violation {
    pub fn new(seed: u64, invariant: &'static str, evidence: String) -> Self {
        Self { seed, invariant, evidence }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}: {}: {}", self.seed, self.invariant, self.evidence)
    }
}

/// A push of the world, as requested.
#[derive(Debug, Clone)]
pub struct PushFacts {
    pub id: String,
    pub request: Value,
}

/// What the world saw, for the checks.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub seed: u64,
    pub pushes: Vec<PushFacts>,
    pub notes: Vec<Note>,
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
    pub seconds: BTreeMap<u64, Second>,
    pub update_quota: u32,
    pub renew_every_ms: u64,
    /// The group's memberships (those that left included), with when each joined and left.
    pub group: Vec<Member>,
    pub listings: Vec<Listing>,
    /// Page tokens the registry refused: (its order among joins, leaves and pages served, the invocation).
    pub refusals: Vec<(u64, u64)>,
    /// The things in the fleet index.
    pub index: Vec<Member>,
    pub invoked_for: BTreeMap<u64, String>,
    /// Each push's record at the end.
    pub finals: BTreeMap<String, PushRecord>,
    pub now_ms: u64,
    pub epoch_now_ms: u64,
}

/// The checks that can fail while the world runs (a safety property broken once stays broken).
pub fn online(facts: &Facts) -> Vec<Violation> {
    let mut found = Vec::new();
    once_per_push(facts, &mut found);
    final_stays_final(facts, &mut found);
    rollback_touches_only_its_own(facts, &mut found);
    control_within_one_renewal(facts, &mut found);
    resumed_where_paused(facts, &mut found);
    no_write_after_claim_lost(facts, &mut found);
    within_the_quota(facts, &mut found);
    dry_run_writes_nothing(facts, &mut found);
    found
}

/// Every check, at the world's end.
pub fn at_end(facts: &Facts) -> Vec<Violation> {
    let mut found = online(facts);
    no_target_skipped(facts, &mut found);
    counts_agree(facts, &mut found);
    rollback_restores(facts, &mut found);
    every_push_finishes(facts, &mut found);
    rollback_ends_rolled_back(facts, &mut found);
    dry_run_completes_and_counts(facts, &mut found);
    found
}

fn violation(facts: &Facts, found: &mut Vec<Violation>, invariant: &'static str, evidence: String) {
    found.push(Violation::new(facts.seed, invariant, evidence));
}

fn pushed_writes<'a>(facts: &'a Facts, push_id: &'a str) -> impl Iterator<Item = &'a Write> + 'a {
    facts.writes.iter().filter(move |w| w.token == push_id)
}

/// No thing is updated twice by one push: a thing belongs to one phase, a retry of an update whose answer was lost
/// reads first, and a takeover checks what it walks. Updating again is a retry of the push (its same `clientToken`)
/// only where another writer changed the thing since (a device that put its own value back): an update that finds
/// every pushed leaf still as this push wrote it is a second update.
fn once_per_push(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let mut earlier: BTreeMap<&str, &Write> = BTreeMap::new();
        for w in pushed_writes(facts, &p.id) {
            if let Some(first) = earlier.get(w.thing.as_str())
                && w.overwrote.iter().all(|(_, writer)| writer.as_deref() == Some(p.id.as_str()))
            {
                violation(
                    facts,
                    found,
                    "no thing updated twice in one phase",
                    format!(
                        "{} was updated by {} at {} ms (invocation {}) and again at {} ms (invocation {}), nobody else writing it between",
                        w.thing, p.id, first.at_ms, first.invocation, w.at_ms, w.invocation
                    ),
                );
            }
            earlier.entry(&w.thing).or_insert(w);
        }
    }
}

/// Once a push's record says a final state, no write changes it, and the push writes no shadow again (but its
/// rollback, asked of an aborted push).
fn final_stays_final(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let mut final_at: Option<(u64, PushState)> = None;
        for n in facts.notes.iter().filter(|n| n.what.push_id() == p.id) {
            let Some(state) = n.what.state() else { continue };
            match final_at {
                Some((_, was)) if was == state => {}
                // An aborted push may still be rolled back (an operator's abort with rollback after a stop).
                Some((_, PushState::Aborted)) if state == PushState::RollingBack => final_at = None,
                Some((at, was)) => violation(
                    facts,
                    found,
                    "a final state stays final",
                    format!("{} was {was:?} at {at} ms, then {state:?} at {} ms ({:?})", p.id, n.at_ms, n.what),
                ),
                None if state.is_final() => final_at = Some((n.at_ms, state)),
                None => {}
            }
        }
        if let Some((at, state)) = final_at
            && let Some(w) = pushed_writes(facts, &p.id).find(|w| w.at_ms > at)
        {
            violation(
                facts,
                found,
                "a final state stays final",
                format!("{} was {state:?} at {at} ms, then wrote {} at {} ms", p.id, w.thing, w.at_ms),
            );
        }
    }
}

/// A rollback sets only the pushed leaves, and only where the push's own value is still there.
fn rollback_touches_only_its_own(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let token = format!("{}{ROLLBACK_SUFFIX}", p.id);
        let pushed = leaf_paths(&p.request["desired"]);
        for w in facts.writes.iter().filter(|w| w.token == token) {
            for (leaf, writer) in &w.overwrote {
                if !pushed.contains(leaf) {
                    violation(
                        facts,
                        found,
                        "a rollback never touches another writer's leaf",
                        format!("{token} set {leaf} of {} at {} ms, a leaf the push never set", w.thing, w.at_ms),
                    );
                } else {
                    // The data plane keeps values, not writers: a leaf holding the push's value (written by the
                    // push, or put back to it by another push's rollback) is the push's to put back.
                    let path: Vec<String> = leaf.split('.').map(str::to_owned).collect();
                    let held = devices::get(&w.before, &path);
                    let pushed_value = devices::get(&p.request["desired"], &path);
                    if held != pushed_value {
                        violation(
                            facts,
                            found,
                            "a rollback never touches another writer's leaf",
                            format!(
                                "{token} set {leaf} of {} at {} ms, which held {} (last written by {}), not the pushed {}",
                                w.thing,
                                w.at_ms,
                                held.map_or("nothing".to_owned(), ToString::to_string),
                                writer.as_deref().unwrap_or("nobody"),
                                pushed_value.map_or("nothing".to_owned(), ToString::to_string),
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// A rolled-back push left every leaf it set either restored to what the push recorded of the thing before it
/// updated it (what the updating invocation last read of it: a rollout reads each thing, journals it, then updates
/// it), or changed since by another writer.
fn rollback_restores(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let Some(record) = facts.finals.get(&p.id) else { continue };
        if record.status.state != PushState::RolledBack {
            continue;
        }
        let failed_or_conflict = record.status.rollback.as_ref().is_some_and(|r| r.failed > 0);
        let token = format!("{}{ROLLBACK_SUFFIX}", p.id);
        for first in dedup_first(pushed_writes(facts, &p.id)) {
            let later: Vec<&Write> =
                facts.writes.iter().filter(|w| w.thing == first.thing && w.at_ms >= first.at_ms).collect();
            for leaf in leaf_paths(&p.request["desired"]) {
                let last = later.iter().rev().find(|w| w.overwrote.iter().any(|(l, _)| *l == leaf));
                let Some(last) = last else { continue };
                let path: Vec<String> = leaf.split('.').map(str::to_owned).collect();
                if last.token == p.id && !failed_or_conflict {
                    violation(
                        facts,
                        found,
                        "a rollback restores what was recorded",
                        format!("{} rolled back, but {leaf} of {} still holds its value", p.id, first.thing),
                    );
                } else if last.token == token {
                    let recorded = facts
                        .reads
                        .iter()
                        .rev()
                        .find(|r| r.invocation == first.invocation && r.thing == first.thing && r.at_ms <= first.at_ms)
                        .map_or(&first.before, |r| &r.desired);
                    let before = devices::get(recorded, &path).cloned().unwrap_or(Value::Null);
                    let now = devices::get(&last.after, &path).cloned().unwrap_or(Value::Null);
                    if before != now {
                        violation(
                            facts,
                            found,
                            "a rollback restores what was recorded",
                            format!(
                                "{}: {leaf} was recorded as {before} before {} updated it, and its rollback left {now}",
                                first.thing, p.id
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// After an operator's pause or abort is on the record, a segment sending for the push stops at its next renewal
/// (the first that reads the control back): no update of the push's lands later than that renewal, until a resume,
/// but the things it had in flight (docs/shadow-push.md: it "lets its things in flight finish").
fn control_within_one_renewal(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let notes: Vec<&Note> = facts.notes.iter().filter(|n| n.what.push_id() == p.id).collect();
        for (i, n) in notes.iter().enumerate() {
            let Noted::ControlRequested { control, .. } = &n.what else { continue };
            let resumed_at = notes[i..]
                .iter()
                .find(|m| matches!(m.what, Noted::Resumed { .. } | Noted::Unstalled { .. }))
                .map_or(u64::MAX, |m| m.at_ms);
            for w in pushed_writes(facts, &p.id).filter(|w| w.at_ms > n.at_ms && w.at_ms < resumed_at) {
                let Some(owner) = owner_at(&notes, w.invocation, w.at_ms) else { continue };
                let renewed = notes.iter().find(|m| {
                    m.at_ms > n.at_ms
                        && matches!(&m.what, Noted::Renewed { owner: o, control: Some(_), .. } if *o == owner)
                });
                // In flight: the thing was read before the renewal (its update then waits for its paced slot), or
                // its update was waiting for a slot (one interval at the push's rate) and then on its way.
                let rate = p.request["maxRequestsPerSecond"].as_u64().unwrap_or(1).max(1);
                let read_before = |r: &Note| {
                    facts.reads.iter().any(|read| {
                        read.invocation == w.invocation
                            && read.thing == w.thing
                            && read.at_ms <= r.at_ms
                            && pushed_writes(facts, &p.id)
                                .all(|o| o.thing != w.thing || o.at_ms >= w.at_ms || o.at_ms < read.at_ms)
                    })
                };
                if let Some(r) = renewed
                    && w.at_ms > r.at_ms + IN_FLIGHT_MS + 1000 / rate
                    && !read_before(r)
                {
                    violation(
                        facts,
                        found,
                        "a control takes effect within one renewal",
                        format!(
                            "{control:?} of {} requested at {} ms, read back by its holder's renewal at {} ms, yet {} was updated at {} ms (invocation {})",
                            p.id, n.at_ms, r.at_ms, w.thing, w.at_ms, w.invocation
                        ),
                    );
                }
            }
        }
    }
}

/// The owner token of `invocation`'s latest claim on the push before `at_ms`.
fn owner_at(notes: &[&Note], invocation: u64, at_ms: u64) -> Option<String> {
    notes.iter().rev().filter(|n| n.invocation == invocation && n.at_ms <= at_ms).find_map(|n| match &n.what {
        Noted::Claimed { owner, .. } => Some(owner.clone()),
        Noted::Created { owner, .. } if !owner.is_empty() => Some(owner.clone()),
        _ => None,
    })
}

/// Every shadow write of a push (its updates and its rollback's) is made by an invocation that holds the push's
/// claim: claimed, not released, not taken over, its lease not run out.
fn no_write_after_claim_lost(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let token = format!("{}{ROLLBACK_SUFFIX}", p.id);
        let notes: Vec<&Note> = facts.notes.iter().filter(|n| n.what.push_id() == p.id).collect();
        for w in facts.writes.iter().filter(|w| w.token == p.id || w.token == token) {
            let Some(owner) = owner_at(&notes, w.invocation, w.at_ms) else {
                violation(
                    facts,
                    found,
                    "no write succeeds after its claim was lost",
                    format!(
                        "{} of {} at {} ms by invocation {}, which never claimed the push",
                        w.token, w.thing, w.at_ms, w.invocation
                    ),
                );
                continue;
            };
            // The notes after that claim (in the order the writes took effect) up to the shadow write.
            let claimed_at = notes
                .iter()
                .rposition(|n| {
                    n.at_ms <= w.at_ms && n.invocation == w.invocation && claim_owner(n) == Some(owner.as_str())
                })
                .unwrap_or(0);
            let mut lease_until = 0;
            let mut lost = None;
            for n in notes[claimed_at..].iter().filter(|n| n.at_ms <= w.at_ms) {
                match &n.what {
                    Noted::Created { owner: o, lease_until_ms, .. }
                    | Noted::Claimed { owner: o, lease_until_ms, .. }
                        if *o == owner =>
                    {
                        lease_until = lease_until.max(*lease_until_ms);
                    }
                    Noted::Renewed { owner: o, lease_until_ms, .. } if *o == owner => {
                        lease_until = lease_until.max(*lease_until_ms);
                    }
                    Noted::Claimed { owner: o, .. } if *o != owner => {
                        lost.get_or_insert(format!(
                            "claimed by another invocation ({}) at {} ms",
                            n.invocation, n.at_ms
                        ));
                    }
                    Noted::Released { owner: o, .. } if *o == owner => {
                        lost.get_or_insert(format!("released at {} ms", n.at_ms));
                    }
                    _ => {}
                }
            }
            let epoch_at = facts.epoch_now_ms - (facts.now_ms - w.at_ms);
            if lost.is_none() && epoch_at > lease_until {
                lost = Some(format!("its lease ran out {} ms before", epoch_at - lease_until));
            }
            if let Some(lost) = lost {
                violation(
                    facts,
                    found,
                    "no write succeeds after its claim was lost",
                    format!(
                        "{} wrote {} at {} ms (invocation {}), its claim {lost}",
                        w.token, w.thing, w.at_ms, w.invocation
                    ),
                );
            }
        }
    }
}

fn claim_owner(n: &Note) -> Option<&str> {
    match &n.what {
        Noted::Claimed { owner, .. } | Noted::Created { owner, .. } => Some(owner),
        _ => None,
    }
}

/// Over any simulated second, the pushes together ask for no more updates than the quota, with the tolerance the
/// product documents (docs/shadow-push.md, "How fast it follows": up to half a part more, while a running push has
/// not yet seen a newcomer) and the limiter's burst (a twentieth of a second's worth).
fn within_the_quota(facts: &Facts, found: &mut Vec<Violation>) {
    let q = u64::from(facts.update_quota);
    let allowed = q + q / 2 + q.div_ceil(20);
    for (second, s) in &facts.seconds {
        if u64::from(s.updates_asked) > allowed {
            violation(
                facts,
                found,
                "the pushes together stay within the quota",
                format!(
                    "second {second}: {} updates asked ({} accepted) of a quota of {q} (at most {allowed} with the documented tolerance)",
                    s.updates_asked, s.updates_accepted
                ),
            );
        }
    }
}

/// Every target of a complete push was updated by it: its listed things, and every member of its group that was a
/// member when the push was served the last page covering its place in the listing (members throughout and late
/// joiners included). A member that had left by then may be skipped: the push may have got to its page after it left
/// (a page served to an invocation that died before walking it is served again).
fn no_target_skipped(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let Some(record) = facts.finals.get(&p.id) else { continue };
        if record.status.state != PushState::Complete || dry_run(p) {
            continue;
        }
        let Some(targets) = required_targets(facts, p, found) else { continue };
        for thing in targets {
            if !pushed_writes(facts, &p.id).any(|w| w.thing == thing) {
                violation(
                    facts,
                    found,
                    "no target skipped",
                    format!(
                        "{} completed ({} targets counted) without updating {thing}{}",
                        p.id,
                        record.status.counts.targets,
                        membership(facts, p, &thing)
                    ),
                );
            }
        }
    }
}

/// The things a complete push must have taken on: its listed things, and the members of its group (or the things its
/// query matches) that were members when the last page covering their place was served to it. `None` (and a
/// violation) when it never listed its group or its query to the end.
fn required_targets(facts: &Facts, p: &PushFacts, found: &mut Vec<Violation>) -> Option<Vec<String>> {
    let mut targets: Vec<String> = p.request["targets"]["things"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    for (at, (source, members)) in sources(facts, p).into_iter().enumerate() {
        // A segment that starts past a source lists it again only to know its things again, without walking it.
        let listings: Vec<&Listing> = listings_of(facts, p, &source)
            .into_iter()
            .filter(|l| starts_from(facts, p, l) <= at + usize::from(listed(p)))
            .collect();
        let Some(last_page) = listings.iter().filter(|l| l.last).max_by_key(|l| l.event) else {
            violation(
                facts,
                found,
                "no target skipped",
                format!("{} completed without ever listing {source} to the end", p.id),
            );
            return None;
        };
        for m in &members {
            let covering = listings.iter().filter(|l| l.covers(m.place)).max_by_key(|l| l.event).unwrap_or(last_page);
            if m.member_at(covering) {
                targets.push(m.thing.clone());
            }
        }
    }
    targets.sort();
    targets.dedup();
    Some(targets)
}

/// The push's paged sources (its group, its query), each with the memberships it lists.
fn sources(facts: &Facts, p: &PushFacts) -> Vec<(String, Vec<Member>)> {
    let mut sources = Vec::new();
    if let Some(group) = p.request["targets"]["thingGroup"].as_str() {
        sources.push((group.to_owned(), facts.group.clone()));
    }
    if let Some(query) = p.request["targets"]["query"].as_str() {
        let members = registry::matching(query, |_| facts.group.clone(), &facts.index).unwrap_or_default();
        sources.push((query.to_owned(), members));
    }
    sources
}

/// Whether the push lists things (its first source).
fn listed(p: &PushFacts) -> bool {
    p.request["targets"]["things"].as_array().is_some_and(|t| !t.is_empty())
}

/// The source the segment that was served `listing` started from: the cursor of the push's last segment recorded
/// before its invocation claimed it (0 when none was, or at a phase's start).
fn starts_from(facts: &Facts, p: &PushFacts, listing: &Listing) -> usize {
    let notes: Vec<&Note> = facts.notes.iter().filter(|n| n.what.push_id() == p.id).collect();
    let Some(claimed) = notes.iter().rposition(|n| {
        n.invocation == listing.invocation
            && n.at_ms <= listing.at_ms
            && matches!(n.what, Noted::Claimed { .. } | Noted::Created { .. })
    }) else {
        return 0;
    };
    notes[..claimed]
        .iter()
        .rev()
        .find_map(|n| match &n.what {
            Noted::Released { next_source, .. } => Some(next_source.unwrap_or(0)),
            _ => None,
        })
        .unwrap_or(0)
}

/// The pages of `source` served to the push.
fn listings_of<'a>(facts: &'a Facts, p: &PushFacts, source: &str) -> Vec<&'a Listing> {
    facts
        .listings
        .iter()
        .filter(|l| l.source == source && facts.invoked_for.get(&l.invocation) == Some(&p.id))
        .collect()
}

/// When `thing` joined and left each paged source of the push, for evidence.
fn membership(facts: &Facts, p: &PushFacts, thing: &str) -> String {
    sources(facts, p)
        .into_iter()
        .flat_map(|(source, members)| {
            members.into_iter().filter(|m| m.thing == thing).map(move |m| match m.left {
                Some((left, _)) => format!(" (in {source} from {} ms to {left} ms)", m.joined_ms),
                None => format!(" (in {source} from {} ms)", m.joined_ms),
            })
        })
        .collect()
}

fn dry_run(p: &PushFacts) -> bool {
    p.request["dryRun"].as_bool() == Some(true)
}

/// A dry run writes no shadow (no update, no rollback) and no journal entry, ever.
fn dry_run_writes_nothing(facts: &Facts, found: &mut Vec<Violation>) {
    for p in facts.pushes.iter().filter(|p| dry_run(p)) {
        let token = format!("{}{ROLLBACK_SUFFIX}", p.id);
        if let Some(w) = facts.writes.iter().find(|w| w.token == p.id || w.token == token) {
            violation(
                facts,
                found,
                "a dry run writes nothing",
                format!(
                    "{} (a dry run) wrote {} at {} ms as {} (invocation {}): {}",
                    p.id, w.thing, w.at_ms, w.token, w.invocation, w.state
                ),
            );
        }
        let journaled = facts.notes.iter().find_map(|n| match &n.what {
            Noted::Journaled { push_id, thing } if *push_id == p.id => Some((thing, n)),
            _ => None,
        });
        if let Some((thing, n)) = journaled {
            violation(
                facts,
                found,
                "a dry run writes nothing",
                format!("{} (a dry run) journaled {thing} at {} ms (invocation {})", p.id, n.at_ms, n.invocation),
            );
        }
    }
}

/// A dry run that no operator aborted completes, and counts as `updated` what a real run would update: each target
/// it must have taken on (as [`required_targets`] says) that needed the change (with `skipUnchanged`: its every read
/// by the push found `desired` without the pushed values) is counted, unless its read failed; and no more than the
/// things it met that needed the change, and the things its listings after a refused page token met again (a dry
/// run changed nothing to recognise them by: docs/shadow-push.md).
fn dry_run_completes_and_counts(facts: &Facts, found: &mut Vec<Violation>) {
    for p in facts.pushes.iter().filter(|p| dry_run(p)) {
        let Some(record) = facts.finals.get(&p.id) else { continue };
        let aborted = facts.notes.iter().any(|n| {
            matches!(&n.what, Noted::ControlRequested { push_id, control } if *push_id == p.id
                && matches!(control, Control::Abort | Control::AbortRollback))
        });
        if record.status.state != PushState::Complete {
            if !aborted {
                violation(
                    facts,
                    found,
                    "a dry run completes",
                    format!("{} (a dry run, never aborted) ended {:?}", p.id, record.status.state),
                );
            }
            continue;
        }
        let skip_unchanged = p.request["skipUnchanged"].as_bool() != Some(false);
        let pushed = leaf_paths(&p.request["desired"]);
        let holds = |desired: &Value| {
            pushed.iter().all(|leaf| {
                let path: Vec<String> = leaf.split('.').map(str::to_owned).collect();
                devices::get(desired, &path) == devices::get(&p.request["desired"], &path)
            })
        };
        let reads = |thing: &str| -> Vec<&Value> {
            facts
                .reads
                .iter()
                .filter(|r| r.thing == thing && facts.invoked_for.get(&r.invocation) == Some(&p.id))
                .map(|r| &r.desired)
                .collect()
        };
        // Whether a thing needed the change as far as the push could see: always without skipUnchanged, else when
        // one of its reads (`every`: each of them, and at least one) found desired without the pushed values.
        let needed = |thing: &str, every: bool| {
            !skip_unchanged
                || if every {
                    let seen = reads(thing);
                    !seen.is_empty() && seen.iter().all(|d| !holds(d))
                } else {
                    reads(thing).iter().any(|d| !holds(d))
                }
        };
        let Some(required) = required_targets(facts, p, found) else { continue };
        let least = required.iter().filter(|t| needed(t, true)).count() as u64;
        // Every thing it could have met: its listed things and the members of its group (or its query's) while a
        // page covering their place was served to it.
        let listings: Vec<&Listing> =
            facts.listings.iter().filter(|l| facts.invoked_for.get(&l.invocation) == Some(&p.id)).collect();
        let mut met: BTreeSet<String> = p.request["targets"]["things"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        for (source, members) in sources(facts, p) {
            let pages = listings_of(facts, p, &source);
            met.extend(
                members
                    .iter()
                    .filter(|m| pages.iter().any(|l| l.covers(m.place) && m.member_at(l)))
                    .map(|m| m.thing.clone()),
            );
        }
        let first_refusal = facts
            .refusals
            .iter()
            .filter(|(_, invocation)| facts.invoked_for.get(invocation) == Some(&p.id))
            .map(|(event, _)| *event)
            .min();
        let again: usize = first_refusal
            .map(|refused| listings.iter().filter(|l| l.event > refused).map(|l| l.served).sum())
            .unwrap_or(0);
        let most = (met.iter().filter(|t| needed(t, false)).count() + again) as u64;
        let counts = &record.status.counts;
        if counts.updated + counts.failed < least || counts.updated > most {
            violation(
                facts,
                found,
                "a dry run counts what a real run would update",
                format!(
                    "{} (a dry run) counted {} updated and {} failed; of its {} required targets {least} needed the \
                     change, and it met {} things ({} needing it) and {again} again after a refused page token",
                    p.id,
                    counts.updated,
                    counts.failed,
                    required.len(),
                    met.len(),
                    met.iter().filter(|t| needed(t, false)).count()
                ),
            );
        }
    }
}

/// A complete push's counts say what the data plane saw: every thing it updated counted as updated, and the totals
/// the sums of its phases'. A thing is counted once, but for one the push cannot recognise when it meets it again
/// after a refused page token: one whose `desired` no longer holds any pushed key (its device cleared it, after
/// another push's values), which is updated and counted again. A thing that left the group before the push was last
/// served the page covering its place may have been updated by an invocation that died, and not met by the walk that
/// counted that page: it may go uncounted.
fn counts_agree(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let Some(record) = facts.finals.get(&p.id) else { continue };
        if record.status.state != PushState::Complete || dry_run(p) {
            continue;
        }
        let mut things: Vec<&str> = pushed_writes(facts, &p.id).map(|w| w.thing.as_str()).collect();
        things.sort_unstable();
        things.dedup();
        // Updates again of a thing whose desired held none of the pushed keys: the ones that may be counted again.
        let mut seen = BTreeSet::new();
        let unrecognisable = pushed_writes(facts, &p.id)
            .filter(|w| !seen.insert(w.thing.as_str()) && !any_key_held(&w.before, &w.state["desired"]))
            .count();
        let required = required_targets(facts, p, &mut Vec::new()).unwrap_or_default();
        let left = things.iter().filter(|t| !required.iter().any(|r| r == *t)).count();
        let counts = &record.status.counts;
        let (least, most) = ((things.len() - left) as u64, (things.len() + unrecognisable) as u64);
        if counts.updated < least || counts.updated > most {
            violation(
                facts,
                found,
                "the counts agree with what was written",
                format!(
                    "{} counted {} updated, and updated {} things ({unrecognisable} updated again after their \
                     desired was cleared, {left} that left the group before their page was last served): {things:?}",
                    p.id,
                    counts.updated,
                    things.len()
                ),
            );
        }
        let phases = &record.status.phases;
        if !phases.is_empty() {
            let (targets, updated) = phases.iter().fold((0, 0), |(t, u), phase| (t + phase.targets, u + phase.updated));
            if (targets, updated) != (counts.targets, counts.updated) {
                violation(
                    facts,
                    found,
                    "the counts agree with what was written",
                    format!(
                        "{}: {} targets and {} updated, its phases {targets} and {updated}",
                        p.id, counts.targets, counts.updated
                    ),
                );
            }
        }
    }
}

/// Whether `desired` holds any key `pushed` sets (a non-null leaf), whatever its value.
fn any_key_held(desired: &Value, pushed: &Value) -> bool {
    match pushed {
        Value::Null => false,
        Value::Object(fields) => fields.iter().any(|(k, v)| desired.get(k).is_some_and(|d| any_key_held(d, v))),
        _ => !desired.is_null(),
    }
}

/// Every push created ends in a final state (the operators resume what is paused or stalled half way).
/// A paused push resumes in the state it was paused from (running, baking, or rolling back): the pause keeps where
/// the push stood, and a resume puts it back there, not in another phase of its life.
fn resumed_where_paused(facts: &Facts, found: &mut Vec<Violation>) {
    for p in &facts.pushes {
        let (mut last, mut paused_from): (Option<PushState>, Option<PushState>) = (None, None);
        for n in facts.notes.iter().filter(|n| n.what.push_id() == p.id) {
            let Some(state) = n.what.state() else { continue };
            match (&n.what, state) {
                (_, PushState::Paused) if paused_from.is_none() => paused_from = last,
                (Noted::Resumed { .. }, resumed) => {
                    if let Some(from) = paused_from.take()
                        && from != resumed
                    {
                        violation(
                            facts,
                            found,
                            "a resume returns to where the pause was",
                            format!(
                                "{} was paused from {from:?} and resumed in {resumed:?} at {} ms (invocation {})",
                                p.id, n.at_ms, n.invocation
                            ),
                        );
                    }
                }
                _ => {}
            }
            if state != PushState::Paused {
                paused_from = None;
                last = Some(state);
            }
        }
    }
}

/// A push that started rolling back ends rolled back: a rollback can be paused and resumed, never abandoned.
fn rollback_ends_rolled_back(facts: &Facts, found: &mut Vec<Violation>) {
    for (id, record) in &facts.finals {
        let rolling =
            facts.notes.iter().find(|n| n.what.push_id() == id && n.what.state() == Some(PushState::RollingBack));
        if let Some(n) = rolling
            && record.status.state.is_final()
            && record.status.state != PushState::RolledBack
        {
            violation(
                facts,
                found,
                "a rollback, once started, ends rolled back",
                format!(
                    "{id} was rolling back at {} ms (invocation {}) and ended {:?}",
                    n.at_ms, n.invocation, record.status.state
                ),
            );
        }
    }
}

fn every_push_finishes(facts: &Facts, found: &mut Vec<Violation>) {
    for (id, record) in &facts.finals {
        if !record.status.state.is_final() {
            violation(
                facts,
                found,
                "every push finishes",
                format!(
                    "{id} is still {:?} (stalled: {:?}) after {} ms",
                    record.status.state, record.holder.stalled, facts.now_ms
                ),
            );
        }
    }
}

/// The leaves of a desired document, as dotted paths.
fn leaf_paths(desired: &Value) -> Vec<String> {
    let mut all = Vec::new();
    devices::leaves(desired, &mut Vec::new(), &mut all);
    all.into_iter().map(|(path, _)| path.join(".")).collect()
}

/// The first write of each thing.
fn dedup_first<'a>(writes: impl Iterator<Item = &'a Write>) -> Vec<&'a Write> {
    let mut seen = BTreeMap::new();
    for w in writes {
        seen.entry(w.thing.clone()).or_insert(w);
    }
    seen.into_values().collect()
}
