//! The status board: the latest status of every instance, readable without asking
//! its actor.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::domain::InstanceStatus;

/// What an instance looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    pub status: InstanceStatus,
    /// Connected and able to send.
    pub ready: bool,
    /// A QR code is showing (ask the instance for it).
    pub has_qr: bool,
    /// The linked phone number, once paired.
    pub phone: Option<String>,
}

impl StatusView {
    pub fn new(status: InstanceStatus, has_qr: bool, phone: Option<String>) -> Self {
        StatusView {
            status,
            ready: status == InstanceStatus::Connected,
            has_qr,
            phone,
        }
    }

    /// The view of an instance no actor reports for (the stored status).
    pub fn from_status(status: InstanceStatus) -> Self {
        StatusView::new(status, false, None)
    }
}

/// Latest [`StatusView`] of every running instance. Cheap to clone.
///
/// Instance actors and their supervisor write it on every transition; the HTTP edge and
/// metrics read it. Reads must not queue behind actors (an actor may be busy starting an
/// engine, or restarting), so this is shared memory behind a std `RwLock`, held only
/// for a map operation and never across an await.
///
/// It is also what decides whether an instance takes a send: the instance actor refuses
/// one unless the board says `ready`. An engine whose session stops (dropped, logged
/// out, crashed) marks the board at that moment, from its own task, through
/// [`StatusBoard::session_lost`] — before its actor has handled the event. So the board
/// never shows `connected` for a session that has already stopped, and a status read
/// and a send decision never disagree.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    entries: Arc<RwLock<HashMap<String, Entry>>>,
    /// Restarts the supervisor has scheduled since start (metrics).
    restarts: Arc<AtomicU64>,
    /// Hands out session tokens, unique in the process.
    sessions: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// As the instance's actor (or its supervisor) last set it.
    view: StatusView,
    /// The running engine's session token (0: none).
    session: u64,
    /// Session losses the engine signalled that its actor has not handled yet.
    unhandled_losses: u64,
    /// What to show while a loss is unhandled.
    lost_as: InstanceStatus,
    /// Paced sends waiting in the instance's queue.
    queued: u64,
}

impl Entry {
    fn new(view: StatusView) -> Self {
        Entry {
            view,
            session: 0,
            unhandled_losses: 0,
            lost_as: InstanceStatus::Disconnected,
            queued: 0,
        }
    }

    fn shown(&self) -> StatusView {
        if self.unhandled_losses == 0 {
            return self.view.clone();
        }
        StatusView::new(self.lost_as, false, self.view.phone.clone())
    }
}

impl StatusBoard {
    /// Counts one restart scheduled by the supervisor.
    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts the supervisor has scheduled since start.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn get(&self, id: &str) -> Option<StatusView> {
        self.read().get(id).map(Entry::shown)
    }

    /// Whether the instance takes sends now: connected, and no session loss pending.
    pub fn ready(&self, id: &str) -> bool {
        self.get(id).is_some_and(|view| view.ready)
    }

    /// A new engine session starts for the instance: returns its token (unique in the
    /// process), which its loss signals and its actor's acknowledgements carry.
    /// Losses of earlier sessions are forgotten.
    pub(crate) fn session_started(&self, id: &str) -> u64 {
        let token = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entries = self.write();
        let entry = entries
            .entry(id.to_owned())
            .or_insert_with(|| Entry::new(StatusView::from_status(InstanceStatus::Connecting)));
        entry.session = token;
        entry.unhandled_losses = 0;
        token
    }

    /// The engine of session `token` stopped being connected (called from the engine's
    /// own task, before the instance actor handles the event): until the actor has
    /// handled it, the instance shows `shown`, not ready. Signals of a session that is
    /// no longer the instance's are ignored.
    pub(crate) fn session_lost(&self, id: &str, token: u64, shown: InstanceStatus) {
        if let Some(entry) = self.write().get_mut(id)
            && entry.session == token
        {
            entry.unhandled_losses += 1;
            entry.lost_as = shown;
        }
    }

    /// The instance actor has handled one loss of session `token` (its own status says
    /// so now).
    pub(crate) fn loss_handled(&self, id: &str, token: u64) {
        if let Some(entry) = self.write().get_mut(id)
            && entry.session == token
        {
            entry.unhandled_losses = entry.unhandled_losses.saturating_sub(1);
        }
    }

    /// How many instances are in each status (every status present, zeros included).
    pub fn counts_by_status(&self) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> = InstanceStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        for entry in self.read().values() {
            *counts.entry(entry.shown().status.as_str()).or_default() += 1;
        }
        counts
    }

    /// How many paced sends wait in the instance's queue (0 for an unknown instance).
    pub fn queued(&self, id: &str) -> u64 {
        self.read().get(id).map_or(0, |e| e.queued)
    }

    /// The instances with paced sends waiting, and how many each.
    pub fn queues(&self) -> Vec<(String, u64)> {
        self.read()
            .iter()
            .filter(|(_, e)| e.queued > 0)
            .map(|(id, e)| (id.clone(), e.queued))
            .collect()
    }

    /// The instance's actor counted its queue.
    pub(crate) fn set_queued(&self, id: &str, queued: u64) {
        if let Some(entry) = self.write().get_mut(id) {
            entry.queued = queued;
        }
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub(crate) fn set(&self, id: &str, view: StatusView) {
        let mut entries = self.write();
        match entries.get_mut(id) {
            Some(entry) => entry.view = view,
            None => {
                entries.insert(id.to_owned(), Entry::new(view));
            }
        }
    }

    /// Changes the status of a known instance, keeping its phone. The supervisor's
    /// word: the instance's actor (and its session) is gone, so no loss is pending.
    pub(crate) fn set_status(&self, id: &str, status: InstanceStatus) {
        let mut entries = self.write();
        let phone = entries.get(id).and_then(|e| e.view.phone.clone());
        // The queue is stored: it waits through a restart.
        let queued = entries.get(id).map_or(0, |e| e.queued);
        let mut entry = Entry::new(StatusView::new(status, false, phone));
        entry.queued = queued;
        entries.insert(id.to_owned(), entry);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(board: &StatusBoard, id: &str) -> u64 {
        let token = board.session_started(id);
        board.set(id, StatusView::new(InstanceStatus::Connected, false, None));
        token
    }

    #[test]
    fn a_signalled_loss_shows_until_handled() {
        let board = StatusBoard::default();
        let token = connected(&board, "i");
        assert!(board.ready("i"));
        board.session_lost("i", token, InstanceStatus::Reconnecting);
        let shown = board.get("i").expect("view");
        assert_eq!(
            (shown.status, shown.ready),
            (InstanceStatus::Reconnecting, false)
        );
        // The actor's later transition does not hide a loss it has not handled yet.
        board.set("i", StatusView::new(InstanceStatus::Connected, false, None));
        assert!(!board.ready("i"));
        board.loss_handled("i", token);
        board.set(
            "i",
            StatusView::new(InstanceStatus::Disconnected, false, None),
        );
        assert_eq!(
            board.get("i").map(|v| v.status),
            Some(InstanceStatus::Disconnected)
        );
        assert_eq!(board.counts_by_status()["disconnected"], 1);
    }

    #[test]
    fn losses_of_an_older_session_are_ignored() {
        let board = StatusBoard::default();
        let old = connected(&board, "i");
        let new = connected(&board, "i");
        assert_ne!(old, new);
        board.session_lost("i", old, InstanceStatus::Disconnected);
        assert!(board.ready("i"), "a stopped engine's late signal");
        board.session_lost("i", new, InstanceStatus::Disconnected);
        board.loss_handled("i", old);
        assert!(!board.ready("i"));
        // The supervisor's word ends every pending loss (the actor is gone).
        board.set_status("i", InstanceStatus::Reconnecting);
        assert_eq!(
            board.get("i").map(|v| v.status),
            Some(InstanceStatus::Reconnecting)
        );
        let token = board.session_started("i");
        board.set("i", StatusView::new(InstanceStatus::Connected, false, None));
        assert!(board.ready("i"));
        board.loss_handled("i", token);
        assert!(board.ready("i"), "nothing to acknowledge");
    }
}
