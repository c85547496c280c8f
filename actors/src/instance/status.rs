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
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    views: Arc<RwLock<HashMap<String, StatusView>>>,
    /// Restarts the supervisor has scheduled since start (metrics).
    restarts: Arc<AtomicU64>,
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
        self.read().get(id).cloned()
    }

    /// How many instances are in each status (every status present, zeros included).
    pub fn counts_by_status(&self) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> = InstanceStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        for view in self.read().values() {
            *counts.entry(view.status.as_str()).or_default() += 1;
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub(crate) fn set(&self, id: &str, view: StatusView) {
        self.write().insert(id.to_owned(), view);
    }

    /// Changes the status of a known instance, keeping its phone.
    pub(crate) fn set_status(&self, id: &str, status: InstanceStatus) {
        let mut views = self.write();
        let phone = views.get(id).and_then(|v| v.phone.clone());
        views.insert(id.to_owned(), StatusView::new(status, false, phone));
    }

    pub(crate) fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, StatusView>> {
        self.views.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, StatusView>> {
        self.views.write().unwrap_or_else(PoisonError::into_inner)
    }
}
