//! The one loop every walk of a push runs, whether it pushes a phase, judges one or rolls back: the things an
//! earlier segment left to redo go first, then pages from the cursor, source after source; each thing is admitted
//! under the pace before it starts, the things in flight are drained at the end, and what is left becomes the next
//! segment's cursor ([`follow`]). What a walk reads and what it does to each thing is its [`Course`].

use std::future::Future;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::Cursor;
use super::pace::{Pace, Request};

/// How many of the last things taken the cursor names ([`Cursor::last`]).
const LAST_KEPT: usize = 3;

/// One page of a source: its items, and the token of the next page (`None`: the source ends here).
pub(super) struct Page<I> {
    pub items: Vec<I>,
    pub next: Option<String>,
    /// The source's first page, read in place of the page at a saved token the source refused: the things the
    /// cursor counts before its position (`walked` and `offset`) are met again ([`Course::take_again`]).
    pub restarted: bool,
}

/// How a thing is met: for the first time, after something that may have reached its shadow already (a takeover,
/// a cut-off attempt), or again after a refused page token: among as many things as were walked before (walked
/// before, unless it joined meanwhile), or in the page after them (new, unless things that joined the walked
/// stretch pushed it down the listing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meeting {
    First,
    Uncertain,
    Again,
    Beyond,
}

/// What a walk makes of one item: a thing to start, an outcome known at once, or nothing to do.
pub(super) enum Take<E, D> {
    Start(E),
    Done(D),
    Skip,
}

/// A course: what a walk reads and what it does to each thing; [`follow`] is the loop. `State` is what the walk
/// counts and remembers as it goes; the things in flight borrow the course only, so the loop can hand the state to
/// each call.
pub(super) trait Course {
    type Item;
    /// A thing taken on, ready to start.
    type Entry;
    /// What happened to one thing.
    type Done;
    type State;

    /// How many sources the walk goes through, one after another.
    fn sources(&self) -> usize;
    /// The first request each thing makes: admission waits for a slot of that kind.
    fn first(&self) -> Request;
    /// Before a segment goes on with a walk an earlier one began (nothing left to redo): `Err` when out of time.
    fn resume(&self, _state: &mut Self::State, _at: &Cursor) -> impl Future<Output = Result<(), ()>> {
        async { Ok(()) }
    }
    /// A thing an earlier segment left to redo, by its key: `Err` when it could not be looked up in time.
    fn redo(
        &self,
        state: &mut Self::State,
        key: String,
    ) -> impl Future<Output = Result<Take<Self::Entry, Self::Done>, ()>>;
    /// The page of `source` at `token`: `Err` when it could not be read in time (the next segment reads it again).
    /// A source that fails for good is the walk's to report; it gives an empty last page.
    fn page(
        &self,
        state: &mut Self::State,
        source: usize,
        token: Option<&str>,
    ) -> impl Future<Output = Result<Page<Self::Item>, ()>>;
    /// The name an item is known by across listings, to find the place in a page listed again (`None`: the walk's
    /// pages do not change between listings).
    fn name<'i>(&self, _item: &'i Self::Item) -> Option<&'i str> {
        None
    }
    /// Takes on one item of a page of `source`.
    fn take(&self, state: &mut Self::State, source: usize, item: Self::Item) -> Take<Self::Entry, Self::Done>;
    /// Takes on an item met again after a refused page token ([`Cursor::again`]): walked before, most likely.
    /// Only a walk whose sources can refuse a token meets one.
    fn take_again(&self, _state: &mut Self::State, _source: usize, _item: Self::Item) -> Take<Self::Entry, Self::Done> {
        Take::Skip
    }
    /// Starts one thing as `meeting` says.
    fn start(&self, entry: Self::Entry, meeting: Meeting) -> impl Future<Output = Self::Done> + '_;
    /// Counts one outcome: `Some(key)` when the thing is to be redone by the next segment, with whether it was met
    /// again.
    fn tally(&self, state: &mut Self::State, done: Self::Done) -> Option<(String, Meeting)>;
}

/// Follows `course` from `cursor` until done or until it is time to hand off; `takeover`: every thing walked is
/// uncertain. The next segment's cursor, or `None` when the walk is done. A walk that is done but left things to
/// redo has a cursor past its last source, with only those things.
pub(super) async fn follow<C: Course>(
    course: &C,
    state: &mut C::State,
    pace: &Pace,
    cursor: Cursor,
    takeover: bool,
) -> Option<Cursor> {
    let sources = course.sources();
    let Cursor {
        source,
        token,
        offset,
        last,
        walked,
        redo: earlier_redo,
        again,
        beyond,
        again_to,
        relisted,
        redo_again,
        redo_beyond,
    } = cursor;
    let mut at = Cursor { source, token, offset, last, walked, again, beyond, again_to, relisted, ..Cursor::default() };
    let first = if takeover { Meeting::Uncertain } else { Meeting::First };
    let mut in_flight = FuturesUnordered::new();
    // Things left to redo, each with how it is to be met again.
    let mut redo: Vec<(String, Meeting)> = Vec::new();
    let mut left = None;
    let tally = |state: &mut C::State, redo: &mut Vec<(String, Meeting)>, done: C::Done| {
        redo.extend(course.tally(state, done));
    };

    // Things an earlier segment took on but could not finish go first: they are known targets, so they make
    // progress even when the walk below cannot. One met again stays one met again.
    let mut stopped = false;
    let mut earlier = earlier_redo
        .into_iter()
        .map(|key| (key, Meeting::Uncertain))
        .chain(redo_again.into_iter().map(|key| (key, Meeting::Again)))
        .chain(redo_beyond.into_iter().map(|key| (key, Meeting::Beyond)));
    for (key, meeting) in earlier.by_ref() {
        if !admit(&mut in_flight, pace, Request::Read, |done| tally(state, &mut redo, done)).await {
            redo.push((key, meeting));
            stopped = true;
            break;
        }
        match course.redo(state, key.clone()).await {
            Ok(Take::Start(entry)) => in_flight.push(course.start(entry, meeting)),
            Ok(Take::Done(done)) => tally(state, &mut redo, done),
            Ok(Take::Skip) => {}
            Err(()) => {
                redo.push((key, meeting));
                stopped = true;
                break;
            }
        }
    }
    redo.extend(earlier);
    if at.source < sources && (stopped || !redo.is_empty() || course.resume(state, &at).await.is_err()) {
        // Out of time before the walk could go on.
        left = Some(at.clone());
        stopped = true;
    }

    'pages: while !stopped && at.source < sources {
        if Instant::now() >= pace.stop_at() {
            left = Some(at.clone());
            break;
        }
        let Ok(page) = course.page(state, at.source, at.token.as_deref()).await else {
            left = Some(at.clone());
            break;
        };
        if page.restarted {
            let before = usize::try_from(at.walked).unwrap_or(usize::MAX).saturating_add(at.offset);
            if !at.relisted {
                // Everything walked before the refused token is met again, from the listing's start, then one page
                // more: things that joined the walked stretch since push what was walked further down the listing.
                // The meeting again ends at the last thing walked, where the new listing has it (`again_to`).
                (at.again, at.beyond, at.offset, at.relisted) = (before as u64, page.items.len() as u64, 0, true);
                at.again_to = std::mem::take(&mut at.last).pop();
            } else {
                // Refused again while meeting things again: what this listing went through is skipped by its
                // position (so that the walk always gains ground), and the rest is met again as planned.
                (at.offset, at.last) = (before, Vec::new());
            }
            (at.token, at.walked) = (None, 0);
        } else if at.offset > 0
            && let Some(newest) = at.last.last()
            && page.items.get(at.offset - 1).and_then(|item| course.name(item)) != Some(newest.as_str())
        {
            // The page listed again is not the one the cursor left: things before its place left the source (or
            // joined it). Go on after the latest of the last things taken that is still there (those after it left);
            // else (all left) meet what lies before the place as perhaps walked (`beyond`: done when holding the
            // values written since the push started, pushed otherwise: some may be new, so another writer's mark
            // proves nothing).
            let found = at
                .last
                .iter()
                .rev()
                .find_map(|name| page.items.iter().position(|item| course.name(item) == Some(name.as_str())));
            match found {
                Some(i) => at.offset = i + 1,
                None => (at.beyond, at.offset) = (at.beyond + at.offset as u64, 0),
            }
        }
        let len = page.items.len();
        for item in page.items.into_iter().skip(at.offset) {
            if !admit(&mut in_flight, pace, course.first(), |done| tally(state, &mut redo, done)).await {
                left = Some(at.clone());
                break 'pages;
            }
            at.offset += 1;
            if let Some(name) = course.name(&item) {
                if at.last.len() == LAST_KEPT {
                    at.last.remove(0);
                }
                at.last.push(name.to_owned());
            }
            let (taken, meeting) = if at.again > 0 {
                at.again -= 1;
                (course.take_again(state, at.source, item), Meeting::Again)
            } else if at.beyond > 0 && !takeover {
                at.beyond -= 1;
                (course.take_again(state, at.source, item), Meeting::Beyond)
            } else {
                // After a holder that died, what lies past the things met again may be its work, not recorded:
                // each is uncertain, as every thing such a segment walks.
                at.beyond = at.beyond.saturating_sub(1);
                (course.take(state, at.source, item), first)
            };
            // The last thing walked before the refused token: what follows it is new.
            if at.again_to.is_some() && at.again_to.as_ref() == at.last.last() {
                (at.again, at.beyond, at.again_to) = (0, 0, None);
            }
            match taken {
                Take::Start(entry) => in_flight.push(course.start(entry, meeting)),
                Take::Done(done) => tally(state, &mut redo, done),
                Take::Skip => {}
            }
        }
        match page.next {
            Some(next) => {
                at.walked += len as u64;
                // Past this page; a skip longer than the page (a listing restarted) goes on into the next, by its
                // position alone. The last thing taken is kept: it ends the meeting again after a refused token.
                (at.token, at.offset) = (Some(next), at.offset.saturating_sub(len));
                if at.offset > 0 {
                    at.last.clear();
                }
            }
            None => {
                (at.source, at.token, at.offset, at.last, at.walked) = (at.source + 1, None, 0, Vec::new(), 0);
                (at.again, at.beyond, at.again_to, at.relisted) = (0, 0, None, false);
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        tally(state, &mut redo, done);
    }
    if !redo.is_empty() {
        let left = left.get_or_insert_with(|| Cursor { source: sources, ..Cursor::default() });
        for (key, meeting) in redo {
            match meeting {
                Meeting::Again => left.redo_again.push(key),
                Meeting::Beyond => left.redo_beyond.push(key),
                Meeting::First | Meeting::Uncertain => left.redo.push(key),
            }
        }
    }
    left
}

/// Waits until one more thing may start: a free place among the things in flight, and a request slot free now, so
/// that no thing waits for the limiter inside the segment longer than the rate needs (at 8 requests/s, 64 things
/// queued behind the limiter would be 8 s of work). Things that finish meanwhile go to `done`. `false` when no
/// request could start before the stop (the deadline or the end of the lease, less the hand-off margin).
async fn admit<F>(
    in_flight: &mut FuturesUnordered<F>,
    pace: &Pace,
    first: Request,
    mut done: impl FnMut(F::Output),
) -> bool
where
    F: Future,
{
    loop {
        // Poll what is in flight first: a thing just started takes its request slot when it is first polled.
        while let Some(Some(finished)) = in_flight.next().now_or_never() {
            done(finished);
        }
        let now = Instant::now();
        let (stop, next) = (pace.stop_at(), pace.limiter(first).next_slot(now));
        if now >= stop || next >= stop {
            return false;
        }
        let room = in_flight.len() < pace.concurrency;
        if room && next <= now {
            return true;
        }
        // Biased: a finished request is taken before the next slot, in this order rather than at random, so that a
        // simulation's seed replays the same walk.
        tokio::select! {
            biased;
            Some(finished) = in_flight.next(), if !in_flight.is_empty() => done(finished),
            () = tokio::time::sleep_until(next), if room => {}
        }
    }
}
