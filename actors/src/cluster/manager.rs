//! [`LeaseManager`]: the actor that makes this node own instances.
//!
//! Every `renew_every` it writes its heartbeat and renews all its leases in one update;
//! the leases the database says it no longer holds are stopped at once. Every
//! `scan_every` it reads the live nodes and the leases, takes the free instances
//! [`super::placement`] gives it (and, after a grace period, free ones meant for a node
//! that does not take them), asking for up to [`ACQUIRE_AT_ONCE`] leases at once, and
//! gives one up when it holds more than its share.
//!
//! **Self-fencing**: the lease of this node expires on the server `lease_ttl` after the
//! server applied the last renewal, which is no earlier than when this node sent it. So
//! at `sent + lease_ttl − renew_every`, measured on the monotonic clock, without a later
//! successful renewal, the node stops every instance itself, before anybody else can take
//! them. Every database call is bounded by the time left until then (a scan's never
//! reaches into the last renewal period: it gives way to the renewal), so a hung database
//! cannot hold the fence back.
//!
//! Each scan also takes the desk's lease ([`DESK_LEASE`]) if nobody holds it; it starts
//! no actor (the HTTP edge sends the desk's calls to its holder).
//!
//! Taking a lease starts the instance actor (parked unless its stored status restores on
//! start, as at a server start), after the webhook queue adopted the instance's share of
//! the outbox; losing or giving one up stops the actor and the instance's webhook
//! deliveries without wiping anything. Stopping the manager (the server shutting down, after the instances stopped)
//! releases every lease at once, so the other nodes take over without waiting for a TTL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::{ClusterSettings, DESK_LEASE, LeaseBoard, LeaseStore, placement};
use crate::domain::event::EventQuery;
use crate::domain::{Instance, raise_id_floor};
use crate::handle::ActorSlot;
use crate::instance::InstancesHandle;
use crate::store::{DynStorage, StoreResult};
use crate::webhook_queue::WebhookQueueHandle;

/// How many scans a free instance meant for another node waits before this node takes
/// it anyway (that node may be dying, or may not see the instance yet).
const GRACE_SCANS: u32 = 3;

/// How many leases a scan asks for at once. A failover's takeover of a dead node's
/// instances is then bounded by a few round trips per batch, not by one per instance.
const ACQUIRE_AT_ONCE: usize = 32;

/// What the lease manager needs.
#[derive(Clone)]
pub(crate) struct LeaseArgs {
    pub settings: ClusterSettings,
    pub store: Arc<dyn LeaseStore>,
    pub storage: DynStorage,
    pub instances: InstancesHandle,
    pub board: LeaseBoard,
    /// Told of every lease taken (before the instance starts) and given up.
    pub webhooks: WebhookQueueHandle,
}

pub(crate) enum LeaseMsg {
    Renew,
    Scan,
    /// The fence deadline of renewal `generation` may have passed.
    Fence,
}

/// The lease manager's messages reach it through this handle. Cheap to clone.
#[derive(Clone)]
pub struct LeaseManagerHandle {
    slot: ActorSlot<LeaseMsg>,
    board: LeaseBoard,
    settings: ClusterSettings,
}

impl LeaseManagerHandle {
    pub fn new(board: LeaseBoard, settings: ClusterSettings) -> Self {
        LeaseManagerHandle {
            slot: ActorSlot::default(),
            board,
            settings,
        }
    }

    /// Asks for a scan now (a new instance was created): it gets an owner without
    /// waiting for the next scan period.
    pub fn scan_now(&self) {
        if let Some(actor) = self.slot.get() {
            let _ = actor.cast(LeaseMsg::Scan);
        }
    }

    pub fn board(&self) -> &LeaseBoard {
        &self.board
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn is_alive(&self) -> bool {
        self.slot.is_alive()
    }
}

/// Spawns the manager linked to `parent` and points `handle` at it.
pub(crate) async fn spawn(
    handle: &LeaseManagerHandle,
    args: LeaseArgs,
    parent: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let (actor, _) = Actor::spawn_linked(None, LeaseManager, args, parent).await?;
    handle.slot.set(Some(actor.clone()));
    Ok(actor.get_cell())
}

/// The manager died: nobody renews until the root respawns it (the fence deadline still
/// holds: the respawned manager starts with no deadline and stops what the board says it
/// held once its first renewal fails).
pub(crate) fn vacate(handle: &LeaseManagerHandle) {
    handle.slot.set(None);
}

pub(crate) struct LeaseManager;

pub(crate) struct LeaseState {
    args: LeaseArgs,
    /// When this node must have stopped its instances unless a renewal succeeds first.
    fence_at: Option<Instant>,
    /// Free instances meant for other nodes, and since when this node has seen them free.
    free_since: HashMap<String, Instant>,
}

impl Actor for LeaseManager {
    type Msg = LeaseMsg;
    type State = LeaseState;
    type Arguments = LeaseArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LeaseMsg>,
        args: LeaseArgs,
    ) -> Result<LeaseState, ActorProcessingErr> {
        myself.send_interval(args.settings.renew_every, || LeaseMsg::Renew);
        myself.send_interval(args.settings.scan_every, || LeaseMsg::Scan);
        // A respawned manager finds leases on the board from its predecessor: they are
        // renewed (or stopped) by the first renewal.
        let _ = myself.cast(LeaseMsg::Renew);
        let _ = myself.cast(LeaseMsg::Scan);
        Ok(LeaseState {
            args,
            fence_at: None,
            free_since: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<LeaseMsg>,
        state: &mut LeaseState,
    ) -> Result<(), ActorProcessingErr> {
        // The instances were stopped before the manager (shutdown order): hand their
        // leases over now instead of after a TTL.
        let held = state.args.board.held();
        let node = state.args.settings.node_id.clone();
        let bound = state.args.settings.renew_every;
        if !held.is_empty() {
            match tokio::time::timeout(bound, state.args.store.release(&node, &held)).await {
                Ok(Ok(())) => {
                    tracing::info!(leases = held.len(), "leases released");
                    state
                        .args
                        .board
                        .counters
                        .released
                        .fetch_add(held.len() as u64, Ordering::Relaxed);
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, "cannot release the leases; they expire on their own")
                }
                Err(_) => {
                    tracing::warn!("releasing the leases timed out; they expire on their own")
                }
            }
            for (id, _) in &held {
                state.args.board.remove(id);
            }
        }
        let _ = tokio::time::timeout(bound, state.args.store.leave(&node)).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LeaseMsg>,
        message: LeaseMsg,
        state: &mut LeaseState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LeaseMsg::Renew => renew(&myself, state).await,
            LeaseMsg::Scan => {
                if fenced(state).await {
                    return Ok(());
                }
                scan(state).await;
            }
            LeaseMsg::Fence => {
                fenced(state).await;
            }
        }
        Ok(())
    }
}

/// How long a renewal may take: until the fence deadline (a slow renewal that lands in
/// time still counts), at most one TTL.
fn renew_bound(state: &LeaseState) -> Duration {
    let ttl = state.args.settings.lease_ttl;
    match state.fence_at {
        Some(at) => at.saturating_duration_since(Instant::now()).min(ttl),
        None => ttl,
    }
}

/// How long a scan's database call may take: never into the last renewal period before
/// the fence deadline, so a slow scan cannot hold the next renewal back; at most one
/// renewal period. Zero: the scan gives way.
fn scan_bound(state: &LeaseState) -> Duration {
    let period = state.args.settings.renew_every;
    match state.fence_at {
        Some(at) => at
            .saturating_duration_since(Instant::now())
            .saturating_sub(period)
            .min(period),
        None => Duration::ZERO,
    }
}

/// Stops every instance if the fence deadline has passed. Returns whether this node is
/// fenced (holds nothing it may run).
async fn fenced(state: &mut LeaseState) -> bool {
    let Some(at) = state.fence_at else {
        // No renewal has succeeded yet: nothing may run.
        stop_all(state, "no lease renewal has succeeded yet").await;
        return true;
    };
    if Instant::now() < at {
        return false;
    }
    tracing::error!(
        node = %state.args.settings.node_id,
        "cannot renew the leases in time: stopping every instance before they can expire"
    );
    if !state.args.board.is_empty() {
        state
            .args
            .board
            .counters
            .self_fenced
            .fetch_add(1, Ordering::Relaxed);
    }
    state.fence_at = None;
    stop_all(state, "lease not renewed in time").await;
    true
}

/// Stops every instance this node holds (in parallel: the fence is a race) and forgets
/// their leases.
async fn stop_all(state: &mut LeaseState, why: &str) {
    let held = state.args.board.held();
    if held.is_empty() {
        return;
    }
    tracing::warn!(instances = held.len(), reason = why, "stopping instances");
    let mut stops = tokio::task::JoinSet::new();
    for (id, _) in held.iter().filter(|(id, _)| id != DESK_LEASE) {
        let instances = state.args.instances.clone();
        let id = id.clone();
        stops.spawn(async move {
            if let Err(err) = instances.release(&id).await {
                tracing::warn!(instance = %id, %err, "cannot stop the instance cleanly");
            }
        });
    }
    while stops.join_next().await.is_some() {}
    for (id, _) in &held {
        forget_lease(&state.args, id);
    }
}

/// This node no longer holds `id`'s lease: off the board, and (for an instance) its
/// webhook deliveries stop here.
fn forget_lease(args: &LeaseArgs, id: &str) {
    args.board.remove(id);
    if id != DESK_LEASE {
        args.webhooks.release(id);
    }
}

async fn renew(myself: &ActorRef<LeaseMsg>, state: &mut LeaseState) {
    let sent = Instant::now();
    let bound = renew_bound(state);
    let answer = tokio::time::timeout(bound, state.args.store.renew(&state.args.settings)).await;
    let owned = match answer {
        Ok(Ok(owned)) => owned,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot renew the leases");
            fenced(state).await;
            return;
        }
        Err(_) => {
            tracing::warn!(?bound, "renewing the leases timed out");
            fenced(state).await;
            return;
        }
    };
    state
        .args
        .board
        .counters
        .renewals
        .fetch_add(1, Ordering::Relaxed);
    let fence_at = sent + state.args.settings.fence_after();
    state.fence_at = Some(fence_at);
    myself.send_after(fence_at.saturating_duration_since(Instant::now()), || {
        LeaseMsg::Fence
    });
    // A lease the database gives this node but the node does not know of: an acquire
    // that succeeded after this node stopped waiting for its answer. Renewals would keep
    // it alive forever with nothing running; released, the next scan places it anew.
    let held: HashSet<String> = state
        .args
        .board
        .held()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let strays: Vec<(String, u64)> = owned
        .iter()
        .filter(|(id, _)| !held.contains(id))
        .cloned()
        .collect();
    if !strays.is_empty() {
        tracing::warn!(
            leases = strays.len(),
            "releasing leases taken without an answer (their instances never started here)"
        );
        let me = state.args.settings.node_id.clone();
        let released = state.args.store.release(&me, &strays);
        if let Ok(Err(err)) = tokio::time::timeout(renew_bound(state), released).await {
            tracing::warn!(%err, "cannot release the leases; they stay until a later renewal");
        }
    }
    // What the database no longer gives this node is stopped now.
    let owned: HashSet<(String, u64)> = owned.into_iter().collect();
    for (id, epoch) in state.args.board.held() {
        if !owned.contains(&(id.clone(), epoch)) {
            tracing::warn!(instance = %id, epoch, "lease lost; stopping the instance");
            state
                .args
                .board
                .counters
                .lost
                .fetch_add(1, Ordering::Relaxed);
            forget_lease(&state.args, &id);
            if id == DESK_LEASE {
                continue;
            }
            if let Err(err) = state.args.instances.release(&id).await {
                tracing::warn!(instance = %id, %err, "cannot stop the instance cleanly");
            }
        }
    }
}

/// Makes the events this node stores for `id` sort after the last one its previous owner
/// stored, whatever the two clocks say: SSE `Last-Event-ID` and event catch-up resume
/// by id.
async fn seed_event_ids(storage: &DynStorage, id: &str, bound: Duration) {
    let newest = EventQuery {
        limit: 1,
        ..EventQuery::default()
    };
    match tokio::time::timeout(bound, storage.list_events(id, &newest)).await {
        Ok(Ok((events, _))) => {
            if let Some(last) = events.last() {
                raise_id_floor(&last.id);
            }
        }
        Ok(Err(err)) => tracing::warn!(instance = %id, %err, "cannot read the last event id"),
        Err(_) => tracing::warn!(instance = %id, "reading the last event id timed out"),
    }
}

async fn scan(state: &mut LeaseState) {
    let bound = scan_bound(state);
    if bound.is_zero() {
        return;
    }
    let view = match tokio::time::timeout(bound, state.args.store.view()).await {
        Ok(Ok(view)) => view,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot read the leases");
            return;
        }
        Err(_) => return,
    };
    // The ids alone: most scans take nothing, and the records are read only when one does.
    let ids = match tokio::time::timeout(bound, state.args.storage.instance_ids()).await {
        Ok(Ok(ids)) => ids,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot list the instances");
            return;
        }
        Err(_) => return,
    };
    let me = state.args.settings.node_id.clone();
    let plan = placement(&me, &view, &ids);

    // Free instances meant for others: taken after a grace period.
    let now = Instant::now();
    let grace = state.args.settings.scan_every * GRACE_SCANS;
    let others: HashSet<&String> = plan.others.iter().collect();
    state.free_since.retain(|id, _| others.contains(id));
    let mut take = plan.take.clone();
    for id in &plan.others {
        let since = *state.free_since.entry(id.clone()).or_insert(now);
        if now.duration_since(since) >= grace {
            take.push(id.clone());
        }
    }

    let instances = if take.is_empty() {
        Vec::new()
    } else {
        match tokio::time::timeout(bound, records_of(&state.args.storage, &take)).await {
            Ok(Ok(instances)) => instances,
            Ok(Err(err)) => {
                tracing::warn!(%err, "cannot read the instances to take");
                return;
            }
            Err(_) => return,
        }
    };
    let by_id: HashMap<&str, &Instance> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let wanted: Vec<&Instance> = take
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    for batch in wanted.chunks(ACQUIRE_AT_ONCE) {
        if fenced(state).await {
            return;
        }
        let bound = scan_bound(state);
        if bound.is_zero() {
            return; // the renewal goes first
        }
        let mut asks = tokio::task::JoinSet::new();
        for instance in batch {
            let store = state.args.store.clone();
            let settings = state.args.settings.clone();
            let id = instance.id.clone();
            asks.spawn(async move {
                let answer = tokio::time::timeout(bound, store.acquire(&id, &settings)).await;
                (id, answer)
            });
        }
        let mut timed_out = false;
        while let Some(asked) = asks.join_next().await {
            let Ok((id, answer)) = asked else {
                continue; // the task panicked: the lease, if taken, is a stray the renewal releases
            };
            match answer {
                Ok(Ok(Some(epoch))) => {
                    if let Some(instance) = by_id.get(id.as_str()) {
                        start_leased(state, instance, epoch, bound);
                    }
                }
                Ok(Ok(None)) => {} // another node was faster
                Ok(Err(err)) => tracing::warn!(instance = %id, %err, "cannot take the lease"),
                Err(_) => timed_out = true,
            }
        }
        if timed_out {
            return;
        }
    }

    if let Some(id) = plan.give_up
        && let Some(epoch) = state.args.board.epoch(&id)
    {
        tracing::info!(instance = %id, "over this node's share; handing the instance over");
        if let Err(err) = state.args.instances.release(&id).await {
            tracing::warn!(instance = %id, %err, "cannot stop the instance cleanly");
        }
        forget_lease(&state.args, &id);
        let lease = [(id.clone(), epoch)];
        let released = state.args.store.release(&me, &lease);
        if let Ok(Ok(())) = tokio::time::timeout(bound, released).await {
            state
                .args
                .board
                .counters
                .released
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    take_desk(state, &view).await;

    // Leases of instances deleted meanwhile.
    let stored: HashSet<&String> = ids.iter().collect();
    for (id, _) in state.args.board.held() {
        if !stored.contains(&id) && id != DESK_LEASE {
            let _ = state.args.instances.release(&id).await;
            forget_lease(&state.args, &id);
            let _ = tokio::time::timeout(bound, state.args.store.delete(&id)).await;
        }
    }
}

/// The records of the instances `take` names (those still stored): read one by one when
/// they are a batch's worth or fewer (a new instance, a few freed ones), so that taking
/// one instance does not read every record of the cluster; listed at once when more (a
/// failover's takeover).
async fn records_of(storage: &DynStorage, take: &[String]) -> StoreResult<Vec<Instance>> {
    if take.len() > ACQUIRE_AT_ONCE {
        return storage.list_instances(None).await;
    }
    let mut found = Vec::with_capacity(take.len());
    for id in take {
        found.extend(storage.instance_by_id(id).await?);
    }
    Ok(found)
}

/// Records a lease just taken and starts its instance off the manager's mailbox (an
/// engine may take a while to start, and renewals must not wait behind it).
fn start_leased(state: &mut LeaseState, instance: &Instance, epoch: u64, bound: Duration) {
    let id = instance.id.clone();
    state.free_since.remove(&id);
    state.args.board.took(&id, epoch);
    tracing::info!(instance = %id, epoch, "lease taken; starting the instance");
    let parked = !instance.status.restores_on_start();
    let instances = state.args.instances.clone();
    let storage = state.args.storage.clone();
    let board = state.args.board.clone();
    let webhooks = state.args.webhooks.clone();
    let instance = instance.clone();
    // Before the instance can raise an event: the queue adopts first.
    webhooks.adopt(&id);
    tokio::spawn(async move {
        seed_event_ids(&storage, &id, bound).await;
        if let Err(err) = instances.start(instance, parked).await {
            tracing::error!(instance = %id, %err, "cannot start the instance");
        }
        // The lease went away while the instance was starting (fenced, lost): it
        // must not run on.
        if board.epoch(&id) != Some(epoch) {
            let _ = instances.release(&id).await;
            if board.epoch(&id).is_none() {
                webhooks.release(&id);
            }
        }
    });
}

/// Takes the desk's lease when nobody holds it (whichever node asks first gets it).
async fn take_desk(state: &mut LeaseState, view: &super::ClusterView) {
    if view.valid_lease(DESK_LEASE).is_some() || state.args.board.holds_desk() {
        return;
    }
    if fenced(state).await {
        return;
    }
    let bound = scan_bound(state);
    if bound.is_zero() {
        return;
    }
    let acquired = tokio::time::timeout(
        bound,
        state.args.store.acquire(DESK_LEASE, &state.args.settings),
    )
    .await;
    match acquired {
        Ok(Ok(Some(epoch))) => {
            state.args.board.took(DESK_LEASE, epoch);
            tracing::info!(
                epoch,
                "desk lease taken; this node serves the operator desk"
            );
        }
        Ok(Ok(None)) | Err(_) => {}
        Ok(Err(err)) => tracing::warn!(%err, "cannot take the desk lease"),
    }
}
