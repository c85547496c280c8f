//! The differential test of [`SharedKeys`] against wacore's own `InMemoryBackend`: the same
//! random operations, the same answers; and a store loaded back from the vault answers
//! every read as the reference does. Run on any [`SessionVault`] (an in-memory one here,
//! MongoDB in the integration tests). [`MemoryVault`] is an in-memory vault.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceInfo, DeviceListRecord, DeviceStore,
    LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow,
    ProtocolStore, SignalStore, TcTokenEntry,
};
use whatsapp_rust::wacore::store::{Device, InMemoryBackend};

use crate::engine::wacore::keys::SharedKeys;
use crate::error::{StoreError, StoreResult};
use crate::store::{KeyBatch, KeyRecord, SessionVault, VaultError, key_records};

/// One session's rows: (table, key) → value.
type KeyRows = BTreeMap<(String, String), Vec<u8>>;

/// An in-memory vault: key rows per instance; `fence` makes every write refused, as
/// after a lost lease.
#[derive(Default)]
pub struct MemoryVault {
    rows: Mutex<HashMap<String, KeyRows>>,
    pub fence: AtomicBool,
}

#[async_trait]
impl SessionVault for MemoryVault {
    async fn load(&self, _instance_id: &str) -> StoreResult<BTreeMap<String, Vec<u8>>> {
        Ok(BTreeMap::new())
    }

    async fn save(&self, _: &str, _: BTreeMap<String, Vec<u8>>) -> Result<(), VaultError> {
        Ok(())
    }

    async fn load_keys(&self, instance_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let rows = self
            .rows
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        Ok(key_records(rows.get(instance_id)))
    }

    async fn write_keys(&self, instance_id: &str, batch: KeyBatch) -> Result<(), VaultError> {
        if self.fence.load(Ordering::SeqCst) {
            return Err(VaultError::Fenced);
        }
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        let rows = rows.entry(instance_id.to_owned()).or_default();
        crate::store::apply_key_batch(rows, batch);
        Ok(())
    }
}

const ADDRESSES: [&str; 5] = [
    "15550000001@s.whatsapp.net",
    "15550000001:3@s.whatsapp.net",
    "15550000002@s.whatsapp.net",
    "100000000001@lid",
    "100000000001:7@lid",
];
const USERS: [&str; 3] = ["15550000001", "15550000002", "100000000001"];
const GROUPS: [&str; 2] = ["120363000000000001@g.us", "120363000000000002@g.us"];
const NAMES: [&str; 3] = ["regular", "critical_block", "regular_high"];
const IDS: [&str; 3] = ["3EB0A1", "3EB0B2", "3EB0C3"];

struct Gen(StdRng);

impl Gen {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.0.random_range(0..items.len())]
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = self.0.random_range(1..9);
        (0..len).map(|_| self.0.random::<u8>()).collect()
    }
    fn small(&mut self) -> u32 {
        self.0.random_range(1..7)
    }
    fn ts(&mut self) -> i64 {
        self.0.random_range(0..6)
    }
    fn key32(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[0] = self.0.random_range(0..4);
        key
    }
    fn sync_id(&mut self) -> Vec<u8> {
        vec![self.0.random_range(0..3)]
    }
    fn version(&mut self) -> HashState {
        let mut state = HashState {
            version: u64::from(self.small()),
            ..HashState::default()
        };
        state.hash[0] = self.0.random();
        state.mac_mismatch_fatal = self.0.random();
        for _ in 0..self.0.random_range(0..3) {
            state
                .index_value_map
                .insert(format!("i{}", self.small()), self.bytes());
        }
        state
    }
    fn lid(&mut self) -> LidPnMappingEntry {
        LidPnMappingEntry {
            lid: format!("10000000000{}", self.small() % 3),
            phone_number: format!("1555000000{}", self.small() % 3),
            created_at: self.ts(),
            updated_at: self.ts(),
            learning_source: "usync".into(),
        }
    }
    fn devices(&mut self) -> DeviceListRecord {
        DeviceListRecord {
            user: self.pick(&USERS).to_owned(),
            devices: (0..self.0.random_range(0..3))
                .map(|i| DeviceInfo::new(i, Some(self.small())))
                .collect(),
            timestamp: self.ts(),
            phash: self
                .0
                .random::<bool>()
                .then(|| format!("2:{}", self.small())),
            raw_id: self.0.random::<bool>().then(|| self.small()),
        }
    }
    fn tc(&mut self) -> TcTokenEntry {
        TcTokenEntry {
            token: if self.0.random() {
                self.bytes()
            } else {
                Vec::new()
            },
            token_timestamp: self.ts(),
            sender_timestamp: self.0.random::<bool>().then(|| self.ts()),
        }
    }
    fn secret(&mut self) -> MsgSecretEntry {
        MsgSecretEntry {
            chat: Arc::from(self.pick(&GROUPS)),
            sender: Arc::from(self.pick(&ADDRESSES)),
            msg_id: Arc::from(self.pick(&IDS)),
            secret: [self.0.random::<u8>(); 32],
            expires_at: self.ts(),
            message_ts: self.ts(),
        }
    }
}

/// A device both stores are given, so that they hold the same one.
fn device(push_name: String) -> Device {
    let mut device = Device::new();
    device.push_name = push_name;
    device
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// A comparable form of an app-state version (its map in key order).
fn version_form(state: &HashState) -> String {
    let map: BTreeMap<&String, &Vec<u8>> = state.index_value_map.iter().collect();
    format!(
        "{} {:?} {:?} {}",
        state.version, state.hash, map, state.mac_mismatch_fatal
    )
}

fn device_form(device: Option<Device>) -> String {
    device
        .map(|d| serde_json::to_string(&d).unwrap_or_default())
        .unwrap_or_default()
}

fn lid_form(entry: Option<LidPnMappingEntry>) -> String {
    format!("{entry:?}")
}

fn result_form<T: std::fmt::Debug>(
    r: Result<T, whatsapp_rust::wacore::store::error::StoreError>,
) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// Applies one random operation to both stores and returns what each answered.
async fn step(
    g: &mut Gen,
    reference: &InMemoryBackend,
    subject: &SharedKeys,
    n: usize,
) -> (String, String, String) {
    macro_rules! both {
        ($name:expr, |$s:ident| $call:expr) => {{
            let a = {
                let $s = reference;
                result_form($call.await)
            };
            let b = {
                let $s = subject;
                result_form($call.await)
            };
            ($name.to_string(), a, b)
        }};
    }
    let address = g.pick(&ADDRESSES);
    match g.0.random_range(0..56) {
        0 => {
            let key = g.key32();
            both!("put_identity", |s| s.put_identity(address, key))
        }
        1 => {
            let rows: Vec<(Arc<str>, [u8; 32])> = (0..2)
                .map(|_| (Arc::from(g.pick(&ADDRESSES)), g.key32()))
                .collect();
            both!("put_identities_batch", |s| s.put_identities_batch(&rows))
        }
        2 => both!("load_identity", |s| s.load_identity(address)),
        3 => both!("delete_identity", |s| s.delete_identity(address)),
        4 => both!("get_session", |s| s.get_session(address)),
        5 => {
            let record = g.bytes();
            both!("put_session", |s| s.put_session(address, &record))
        }
        6 => {
            let rows: Vec<(Arc<str>, Bytes)> = (0..3)
                .map(|_| (Arc::from(g.pick(&ADDRESSES)), Bytes::from(g.bytes())))
                .collect();
            both!("put_sessions_batch", |s| s.put_sessions_batch(&rows))
        }
        7 => both!("delete_session", |s| s.delete_session(address)),
        8 => both!("has_session", |s| s.has_session(address)),
        9 => {
            let user = g.pick(&USERS);
            both!("has_signal_state_for_user", |s| s
                .has_signal_state_for_user(user))
        }
        10 => {
            let (id, record, up) = (g.small(), g.bytes(), g.0.random());
            both!("store_prekey", |s| s.store_prekey(id, &record, up))
        }
        11 => {
            let keys: Vec<(u32, Bytes)> = (0..3)
                .map(|_| (g.small(), Bytes::from(g.bytes())))
                .collect();
            both!("store_prekeys_batch", |s| s
                .store_prekeys_batch(&keys, false))
        }
        12 => {
            let id = g.small();
            both!("load_prekey", |s| s.load_prekey(id))
        }
        13 => {
            let ids = [g.small(), g.small(), g.small()];
            both!("load_prekeys_batch", |s| s.load_prekeys_batch(&ids))
        }
        14 => {
            let ids = [g.small()];
            both!("mark_prekeys_uploaded", |s| s.mark_prekeys_uploaded(&ids))
        }
        15 => {
            let id = g.small();
            both!("remove_prekey", |s| s.remove_prekey(id))
        }
        16 => both!("get_max_prekey_id", |s| s.get_max_prekey_id()),
        17 => {
            let (id, record) = (g.small(), g.bytes());
            both!("store_signed_prekey", |s| s
                .store_signed_prekey(id, &record))
        }
        18 => {
            let id = g.small();
            both!("load_signed_prekey", |s| s.load_signed_prekey(id))
        }
        19 => {
            let a = sorted(
                reference
                    .load_all_signed_prekeys()
                    .await
                    .unwrap_or_default(),
            );
            let b = sorted(subject.load_all_signed_prekeys().await.unwrap_or_default());
            (
                "load_all_signed_prekeys".into(),
                format!("{a:?}"),
                format!("{b:?}"),
            )
        }
        20 => {
            let id = g.small();
            both!("remove_signed_prekey", |s| s.remove_signed_prekey(id))
        }
        21 => {
            let record = g.bytes();
            both!("put_sender_key", |s| s.put_sender_key(address, &record))
        }
        22 => {
            let rows: Vec<(Arc<str>, Bytes)> = (0..2)
                .map(|_| (Arc::from(g.pick(&ADDRESSES)), Bytes::from(g.bytes())))
                .collect();
            both!("put_sender_keys_batch", |s| s.put_sender_keys_batch(&rows))
        }
        23 => both!("get_sender_key", |s| s.get_sender_key(address)),
        24 => both!("delete_sender_key", |s| s.delete_sender_key(address)),
        25 => {
            let id = g.sync_id();
            both!("get_sync_key", |s| s.get_sync_key(&id))
        }
        26 => {
            let id = g.sync_id();
            let key = AppStateSyncKey {
                key_data: g.bytes(),
                fingerprint: g.bytes(),
                timestamp: g.ts(),
            };
            both!("set_sync_key", |s| s.set_sync_key(&id, key.clone()))
        }
        27 => {
            let name = g.pick(&NAMES);
            let a = reference.get_version(name).await.map(|v| version_form(&v));
            let b = subject.get_version(name).await.map(|v| version_form(&v));
            ("get_version".into(), result_form(a), result_form(b))
        }
        28 => {
            let (name, state) = (g.pick(&NAMES), g.version());
            both!("set_version", |s| s.set_version(name, state.clone()))
        }
        29 => {
            let name = g.pick(&NAMES);
            let macs: Vec<AppStateMutationMAC> = (0..2)
                .map(|_| AppStateMutationMAC {
                    index_mac: g.sync_id(),
                    value_mac: g.bytes(),
                })
                .collect();
            both!("put_mutation_macs", |s| s.put_mutation_macs(name, 1, &macs))
        }
        30 => {
            let (name, index) = (g.pick(&NAMES), g.sync_id());
            both!("get_mutation_mac", |s| s.get_mutation_mac(name, &index))
        }
        31 => {
            let (name, index) = (g.pick(&NAMES), vec![g.sync_id()]);
            both!("delete_mutation_macs", |s| s
                .delete_mutation_macs(name, &index))
        }
        32 => {
            let name = g.pick(&NAMES);
            both!("clear_mutation_macs", |s| s.clear_mutation_macs(name))
        }
        33 => both!("get_latest_sync_key_id", |s| s.get_latest_sync_key_id()),
        34 => {
            let group = g.pick(&GROUPS);
            let entries: Vec<(&str, bool)> =
                (0..2).map(|_| (g.pick(&ADDRESSES), g.0.random())).collect();
            both!("set_sender_key_status", |s| s
                .set_sender_key_status(group, &entries))
        }
        35 => {
            let group = g.pick(&GROUPS);
            let a = sorted(
                reference
                    .get_sender_key_devices(group)
                    .await
                    .unwrap_or_default(),
            );
            let b = sorted(
                subject
                    .get_sender_key_devices(group)
                    .await
                    .unwrap_or_default(),
            );
            (
                "get_sender_key_devices".into(),
                format!("{a:?}"),
                format!("{b:?}"),
            )
        }
        36 => {
            let group = g.pick(&GROUPS);
            both!("clear_sender_key_devices", |s| s
                .clear_sender_key_devices(group))
        }
        37 => {
            let devices = [address];
            both!("delete_sender_key_device_rows", |s| s
                .delete_sender_key_device_rows(&devices))
        }
        38 if n.is_multiple_of(7) => both!("clear_all_sender_key_devices", |s| s
            .clear_all_sender_key_devices()),
        39 => {
            let entry = g.lid();
            both!("put_lid_mapping", |s| s.put_lid_mapping(&entry))
        }
        40 => {
            let entries = [g.lid(), g.lid()];
            both!("put_lid_mappings", |s| s.put_lid_mappings(&entries))
        }
        41 => {
            let (lid, pn) = (
                format!("10000000000{}", g.small() % 3),
                format!("1555000000{}", g.small() % 3),
            );
            let a = (
                lid_form(reference.get_lid_mapping(&lid).await.unwrap_or_default()),
                lid_form(reference.get_pn_mapping(&pn).await.unwrap_or_default()),
            );
            let b = (
                lid_form(subject.get_lid_mapping(&lid).await.unwrap_or_default()),
                lid_form(subject.get_pn_mapping(&pn).await.unwrap_or_default()),
            );
            ("lid/pn mapping".into(), format!("{a:?}"), format!("{b:?}"))
        }
        42 => {
            let (id, key) = (g.pick(&IDS), g.sync_id());
            both!("save_base_key", |s| s.save_base_key(address, id, &key))
        }
        43 => {
            let (id, key) = (g.pick(&IDS), g.sync_id());
            both!("has_same_base_key", |s| s
                .has_same_base_key(address, id, &key))
        }
        44 => {
            let id = g.pick(&IDS);
            both!("delete_base_key", |s| s.delete_base_key(address, id))
        }
        45 => {
            let records = vec![g.devices(), g.devices()];
            both!("update_device_lists", |s| s
                .update_device_lists(records.clone()))
        }
        46 => {
            let user = g.pick(&USERS);
            if g.0.random() {
                both!("get_devices", |s| s.get_devices(user))
            } else {
                both!("delete_devices", |s| s.delete_devices(user))
            }
        }
        47 => {
            let (group, blob) = (g.pick(&GROUPS), g.bytes());
            match g.0.random_range(0..3) {
                0 => both!("put_group_metadata", |s| s.put_group_metadata(group, &blob)),
                1 => both!("get_group_metadata", |s| s.get_group_metadata(group)),
                _ => both!("delete_group_metadata", |s| s.delete_group_metadata(group)),
            }
        }
        48 => {
            let entry = g.tc();
            match g.0.random_range(0..4) {
                0 => both!("put_tc_token", |s| s.put_tc_token(address, &entry)),
                1 => both!("get_tc_token", |s| s.get_tc_token(address)),
                2 => both!("delete_tc_token", |s| s.delete_tc_token(address)),
                _ => {
                    let a = sorted(reference.get_all_tc_token_jids().await.unwrap_or_default());
                    let b = sorted(subject.get_all_tc_token_jids().await.unwrap_or_default());
                    (
                        "get_all_tc_token_jids".into(),
                        format!("{a:?}"),
                        format!("{b:?}"),
                    )
                }
            }
        }
        49 => {
            let (token, sender) = (g.ts(), g.ts());
            both!("delete_expired_tc_tokens", |s| s
                .delete_expired_tc_tokens(token, sender))
        }
        50 => {
            let (token, ts) = (g.bytes(), g.ts());
            if g.0.random() {
                both!("touch_tc_token_sender_timestamp", |s| s
                    .touch_tc_token_sender_timestamp(address, ts))
            } else {
                both!("store_received_tc_token", |s| s
                    .store_received_tc_token(address, &token, ts))
            }
        }
        51 => {
            let (chat, id, payload) = (g.pick(&GROUPS), g.pick(&IDS), g.bytes());
            match g.0.random_range(0..4) {
                0 | 1 => both!("store_sent_message", |s| s
                    .store_sent_message(chat, id, &payload)),
                2 => both!("take_sent_message", |s| s.take_sent_message(chat, id)),
                // Every stored message is older than this: all expire.
                _ => both!("delete_expired_sent_messages", |s| s
                    .delete_expired_sent_messages(i64::MAX)),
            }
        }
        52 => {
            let (chat, id, message) = (g.pick(&GROUPS), g.pick(&IDS), g.bytes());
            match g.0.random_range(0..6) {
                0 => both!("store_pending_inbound", |s| s
                    .store_pending_inbound(chat, address, id, &message)),
                1 => {
                    let rows = [PendingInboundRow {
                        chat,
                        sender: address,
                        id,
                        message: &message,
                    }];
                    both!("store_pending_inbound_batch", |s| s
                        .store_pending_inbound_batch(&rows))
                }
                2 => both!("get_pending_inbound", |s| s
                    .get_pending_inbound(chat, address, id)),
                3 => both!("delete_pending_inbound", |s| s
                    .delete_pending_inbound(chat, address, id)),
                4 => {
                    let keys = [PendingInboundKey {
                        chat,
                        sender: address,
                        id,
                    }];
                    both!("delete_pending_inbound_batch", |s| s
                        .delete_pending_inbound_batch(&keys))
                }
                _ => both!("delete_expired_pending_inbound", |s| s
                    .delete_expired_pending_inbound(0)),
            }
        }
        53 => {
            let entries = vec![g.secret(), g.secret(), g.secret()];
            both!("put_msg_secrets", |s| s.put_msg_secrets(entries.clone()))
        }
        54 => {
            let (chat, id) = (g.pick(&GROUPS), g.pick(&IDS));
            match g.0.random_range(0..3) {
                0 => both!("get_msg_secret_with_ts", |s| s
                    .get_msg_secret_with_ts(chat, address, id)),
                1 => {
                    let secret = [g.0.random::<u8>(); 32];
                    both!("put_msg_secret", |s| s
                        .put_msg_secret(chat, address, id, &secret))
                }
                _ => {
                    let cutoff = g.ts();
                    both!("delete_expired_msg_secrets", |s| s
                        .delete_expired_msg_secrets(cutoff))
                }
            }
        }
        _ => {
            // The device: created (each store makes its own random keys, so both are
            // then given the same one), saved, read.
            let given = device(format!("push {}", g.small()));
            match g.0.random_range(0..3) {
                0 => {
                    let a = reference.create().await.map(|_| ());
                    let b = subject.create().await.map(|_| ());
                    let _ = reference.save(&given).await;
                    let _ = subject.save(&given).await;
                    ("create".into(), result_form(a), result_form(b))
                }
                1 => both!("save", |s| s.save(&given)),
                _ => {
                    let a = (
                        reference.exists().await.ok(),
                        device_form(reference.load().await.ok().flatten()),
                    );
                    let b = (
                        subject.exists().await.ok(),
                        device_form(subject.load().await.ok().flatten()),
                    );
                    ("device".into(), format!("{a:?}"), format!("{b:?}"))
                }
            }
        }
    }
}

/// Every read over the whole key universe, in a comparable form; `take_sent` takes the
/// sent messages too (the only way to read them).
async fn sweep(store: &dyn Backend, take_sent: bool) -> Vec<String> {
    let mut out = Vec::new();
    for address in ADDRESSES {
        out.push(format!(
            "identity {address} {:?}",
            store.load_identity(address).await.ok()
        ));
        out.push(format!(
            "session {address} {:?}",
            store.get_session(address).await.ok()
        ));
        out.push(format!(
            "sender key {address} {:?}",
            store.get_sender_key(address).await.ok()
        ));
        out.push(format!(
            "tc {address} {:?}",
            store.get_tc_token(address).await.ok()
        ));
        for id in IDS {
            for key in 0..3u8 {
                out.push(format!(
                    "base key {address} {id} {key} {:?}",
                    store.has_same_base_key(address, id, &[key]).await.ok()
                ));
            }
            for chat in GROUPS {
                out.push(format!(
                    "pending {chat} {address} {id} {:?}",
                    store.get_pending_inbound(chat, address, id).await.ok()
                ));
                out.push(format!(
                    "secret {chat} {address} {id} {:?}",
                    store.get_msg_secret_with_ts(chat, address, id).await.ok()
                ));
            }
        }
    }
    for user in USERS {
        out.push(format!(
            "signal state {user} {:?}",
            store.has_signal_state_for_user(user).await.ok()
        ));
        out.push(format!(
            "devices {user} {:?}",
            store.get_devices(user).await.ok()
        ));
    }
    for id in 0..8 {
        out.push(format!(
            "prekey {id} {:?}",
            store.load_prekey(id).await.ok()
        ));
        out.push(format!(
            "signed {id} {:?}",
            store.load_signed_prekey(id).await.ok()
        ));
    }
    out.push(format!(
        "max prekey {:?}",
        store.get_max_prekey_id().await.ok()
    ));
    out.push(format!(
        "signed all {:?}",
        sorted(store.load_all_signed_prekeys().await.unwrap_or_default())
    ));
    for id in 0..3u8 {
        out.push(format!(
            "sync key {id} {:?}",
            store.get_sync_key(&[id]).await.ok()
        ));
        for name in NAMES {
            out.push(format!(
                "mac {name} {id} {:?}",
                store.get_mutation_mac(name, &[id]).await.ok()
            ));
        }
    }
    out.push(format!(
        "latest sync key {:?}",
        store.get_latest_sync_key_id().await.ok()
    ));
    for name in NAMES {
        let version = store.get_version(name).await.map(|v| version_form(&v));
        out.push(format!("version {name} {:?}", version.ok()));
    }
    for group in GROUPS {
        out.push(format!(
            "sender key devices {group} {:?}",
            sorted(
                store
                    .get_sender_key_devices(group)
                    .await
                    .unwrap_or_default()
            )
        ));
        out.push(format!(
            "group {group} {:?}",
            store.get_group_metadata(group).await.ok()
        ));
        if take_sent {
            for id in IDS {
                out.push(format!(
                    "sent {group} {id} {:?}",
                    store.take_sent_message(group, id).await.ok()
                ));
            }
        }
    }
    for n in 0..3 {
        out.push(format!(
            "lid {n} {}",
            lid_form(
                store
                    .get_lid_mapping(&format!("10000000000{n}"))
                    .await
                    .ok()
                    .flatten()
            )
        ));
        out.push(format!(
            "pn {n} {}",
            lid_form(
                store
                    .get_pn_mapping(&format!("1555000000{n}"))
                    .await
                    .ok()
                    .flatten()
            )
        ));
    }
    let mut lids: Vec<String> = store
        .get_all_lid_mappings()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| format!("{e:?}"))
        .collect();
    lids.sort();
    out.push(format!("all lids {lids:?}"));
    out.push(format!(
        "tc jids {:?}",
        sorted(store.get_all_tc_token_jids().await.unwrap_or_default())
    ));
    out.push(format!(
        "device {:?} {}",
        store.exists().await.ok(),
        device_form(store.load().await.ok().flatten())
    ));
    out
}

fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} reads against {}", a.len(), b.len()));
    }
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("reference: {x}\n   shared: {y}"))
}

/// Runs `steps` random operations (from `seed`) on a [`SharedKeys`] over `vault` and on
/// wacore's `InMemoryBackend`, comparing every answer; every `reload_every` steps, and at
/// the end, a store loaded afresh from the vault must read as the reference does (at the
/// end the sent messages too: reading one takes it).
pub async fn differential(
    vault: Arc<dyn SessionVault>,
    instance_id: &str,
    seed: u64,
    steps: usize,
    reload_every: usize,
) -> Result<(), String> {
    let reference = InMemoryBackend::new();
    let subject = SharedKeys::open(vault.clone(), instance_id)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let mut g = Gen(StdRng::seed_from_u64(seed));
    for n in 1..=steps {
        let (op, a, b) = step(&mut g, &reference, &subject, n).await;
        if a != b {
            return Err(format!(
                "seed {seed}, step {n}, {op}: the reference answered {a}, the shared store {b}"
            ));
        }
        if n % reload_every == 0 || n == steps {
            let reloaded = SharedKeys::open(vault.clone(), instance_id)
                .await
                .map_err(|e| format!("reopen: {e}"))?;
            let last = n == steps;
            let want = sweep(&reference, last).await;
            let got = sweep(&reloaded, last).await;
            if let Some(diff) = first_difference(&want, &got) {
                return Err(format!(
                    "seed {seed}, after step {n}, loaded back from the vault:\n   {diff}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_shared_store_answers_as_wacores_own_and_loads_back_the_same() {
        for seed in 1..=12 {
            let vault = Arc::new(MemoryVault::default());
            if let Err(diff) = differential(vault, "i1", seed, 1_500, 250).await {
                panic!("{diff}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_write_fails_the_call_and_changes_nothing() {
        let vault = Arc::new(MemoryVault::default());
        let keys = SharedKeys::open(vault.clone(), "i1").await.expect("open");
        keys.put_session("a@s.whatsapp.net", b"one")
            .await
            .expect("put");
        vault.fence.store(true, Ordering::SeqCst);
        assert!(keys.put_session("a@s.whatsapp.net", b"two").await.is_err());
        assert!(keys.delete_session("a@s.whatsapp.net").await.is_err());
        let session = keys.get_session("a@s.whatsapp.net").await.expect("get");
        assert_eq!(
            session.as_deref(),
            Some(&b"one"[..]),
            "a refused write must not apply"
        );
        vault.fence.store(false, Ordering::SeqCst);
        let reloaded = SharedKeys::open(vault, "i1").await.expect("reopen");
        let session = reloaded.get_session("a@s.whatsapp.net").await.expect("get");
        assert_eq!(session.as_deref(), Some(&b"one"[..]));
    }

    #[tokio::test]
    async fn a_cleared_session_loads_empty() {
        let vault = Arc::new(MemoryVault::default());
        let keys = SharedKeys::open(vault.clone(), "i1").await.expect("open");
        keys.put_session("a@s.whatsapp.net", b"one")
            .await
            .expect("put");
        keys.create().await.expect("device");
        vault
            .write_keys(
                "i1",
                KeyBatch {
                    clear: true,
                    writes: Vec::new(),
                },
            )
            .await
            .expect("clear");
        let reloaded = SharedKeys::open(vault, "i1").await.expect("reopen");
        assert!(!reloaded.exists().await.expect("exists"));
        assert_eq!(
            reloaded.get_session("a@s.whatsapp.net").await.expect("get"),
            None
        );
    }
}
