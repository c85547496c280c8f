//! [`SharedKeys`]: a real session's key material kept in the cluster's [`SessionVault`],
//! so another node can take the instance over without a new QR code.
//!
//! whatsapp-rust reads and writes its keys through the `Backend` traits (Signal sessions,
//! identities, pre-keys, sender keys, app-state keys, the device itself…). This backend
//! keeps them all in memory for reads and writes every change through to the vault
//! before it applies it: one fenced write per trait call (the vault refuses it when this
//! node no longer holds the instance's lease at its epoch, and the call fails). A node
//! taking the instance over loads every record back.
//!
//! Each change is a row `(table, key, value)`; a deletion is a row without a value. The
//! semantics of every call are those of wacore's `InMemoryBackend`, which a differential
//! test checks: the same operations give the same answers, before and after a reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry, MessageSecret,
    MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore, TcTokenEntry,
    merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

use crate::store::{KeyBatch, KeyRecord, KeyWrite, SessionVault, VaultError};

/// The tables of a session's key material (the `table` of its rows).
mod table {
    pub const IDENTITY: &str = "identity";
    pub const SESSION: &str = "session";
    pub const PREKEY: &str = "prekey";
    pub const SIGNED_PREKEY: &str = "signedPrekey";
    pub const SENDER_KEY: &str = "senderKey";
    pub const SYNC_KEY: &str = "syncKey";
    /// One row (key ""): the id of the app-state key set last.
    pub const LATEST_SYNC_KEY: &str = "latestSyncKey";
    pub const VERSION: &str = "appStateVersion";
    pub const MUTATION_MAC: &str = "mutationMac";
    pub const SENDER_KEY_DEVICE: &str = "senderKeyDevice";
    pub const LID: &str = "lidMapping";
    /// Phone → LID, kept as its own rows (as wacore keeps its reverse index).
    pub const PN: &str = "pnMapping";
    pub const BASE_KEY: &str = "baseKey";
    pub const DEVICE_LIST: &str = "deviceList";
    pub const GROUP: &str = "groupMetadata";
    pub const TC_TOKEN: &str = "tcToken";
    pub const SENT: &str = "sentMessage";
    pub const PENDING: &str = "pendingInbound";
    pub const MSG_SECRET: &str = "msgSecret";
    /// One row (key ""): the device (its own keys and account).
    pub const DEVICE: &str = "device";
}

/// At most this many sent messages are kept (as wacore's own backends do): the oldest
/// go first when it is reached.
const MAX_SENT_MESSAGES: usize = 4096;

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Serialization(Box::new(e)))
}

/// A composite key as one string (a JSON array: no separator can collide).
fn compose<T: Serialize>(parts: &T) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The rows of one call, written to the vault in one fenced write.
#[derive(Default)]
struct Changes(Vec<KeyWrite>);

impl Changes {
    fn put(&mut self, table: &'static str, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.0.push(KeyWrite {
            table,
            key: key.into(),
            value: Some(value),
        });
        self
    }

    fn delete(&mut self, table: &'static str, key: impl Into<String>) -> &mut Self {
        self.0.push(KeyWrite {
            table,
            key: key.into(),
            value: None,
        });
        self
    }
}

type SentKey = (String, String);
type InboundKey = (String, String, String);

/// Everything, as wacore's in-memory backend holds it.
#[derive(Default)]
struct Model {
    identities: HashMap<String, [u8; 32]>,
    sessions: HashMap<String, Bytes>,
    prekeys: HashMap<u32, Bytes>,
    signed_prekeys: HashMap<u32, Vec<u8>>,
    sender_keys: HashMap<String, Vec<u8>>,
    sync_keys: HashMap<Vec<u8>, AppStateSyncKey>,
    latest_sync_key_id: Option<Vec<u8>>,
    versions: HashMap<String, HashState>,
    mutation_macs: HashMap<(String, Vec<u8>), Vec<u8>>,
    sender_key_devices: HashMap<String, HashMap<String, bool>>,
    lid_mappings: HashMap<String, LidPnMappingEntry>,
    pn_to_lid: HashMap<String, String>,
    base_keys: HashMap<SentKey, Vec<u8>>,
    device_lists: HashMap<String, DeviceListRecord>,
    group_metadata: HashMap<String, Vec<u8>>,
    tc_tokens: HashMap<String, TcTokenEntry>,
    /// (chat, message id) → (payload, stored at, s).
    sent_messages: HashMap<SentKey, (Vec<u8>, i64)>,
    /// (chat, sender, id) → (message, stored at, s).
    pending_inbound: HashMap<InboundKey, (Vec<u8>, i64)>,
    /// (chat, sender, message id) → (secret, expires at, message time).
    msg_secrets: HashMap<InboundKey, (MessageSecret, i64, i64)>,
    device: Option<Device>,
}

impl Model {
    /// Rebuilds the model from the stored rows. A row that does not decode is skipped
    /// (and logged): one bad row must not lose the whole session.
    fn load(instance_id: &str, records: Vec<KeyRecord>) -> Model {
        let mut model = Model::default();
        for record in records {
            if let Err(err) = model.apply_record(&record) {
                tracing::warn!(
                    instance = %instance_id,
                    table = %record.table,
                    key = %record.key,
                    %err,
                    "a stored session key does not decode; it is skipped"
                );
            }
        }
        model
    }

    fn apply_record(&mut self, record: &KeyRecord) -> Result<()> {
        let bad_key = || StoreError::Validation(format!("bad key {:?}", record.key));
        let key = record.key.clone();
        let value = &record.value;
        match record.table.as_str() {
            table::IDENTITY => {
                let bytes: [u8; 32] = value.as_slice().try_into().map_err(|_| bad_key())?;
                self.identities.insert(key, bytes);
            }
            table::SESSION => {
                self.sessions.insert(key, Bytes::from(value.clone()));
            }
            table::PREKEY => {
                let id = key.parse().map_err(|_| bad_key())?;
                self.prekeys.insert(id, Bytes::from(value.clone()));
            }
            table::SIGNED_PREKEY => {
                let id = key.parse().map_err(|_| bad_key())?;
                self.signed_prekeys.insert(id, value.clone());
            }
            table::SENDER_KEY => {
                self.sender_keys.insert(key, value.clone());
            }
            table::SYNC_KEY => {
                let id = unhex(&key).ok_or_else(bad_key)?;
                self.sync_keys.insert(id, decode(value)?);
            }
            table::LATEST_SYNC_KEY => self.latest_sync_key_id = Some(value.clone()),
            table::VERSION => {
                self.versions.insert(key, decode(value)?);
            }
            table::MUTATION_MAC => {
                let (name, index): (String, String) = decode(key.as_bytes())?;
                let index = unhex(&index).ok_or_else(bad_key)?;
                self.mutation_macs.insert((name, index), value.clone());
            }
            table::SENDER_KEY_DEVICE => {
                let (group, device): (String, String) = decode(key.as_bytes())?;
                self.sender_key_devices
                    .entry(group)
                    .or_default()
                    .insert(device, decode(value)?);
            }
            table::LID => {
                self.lid_mappings.insert(key, decode(value)?);
            }
            table::PN => {
                let lid = String::from_utf8(value.clone()).map_err(|_| bad_key())?;
                self.pn_to_lid.insert(key, lid);
            }
            table::BASE_KEY => {
                self.base_keys
                    .insert(decode(key.as_bytes())?, value.clone());
            }
            table::DEVICE_LIST => {
                self.device_lists.insert(key, decode(value)?);
            }
            table::GROUP => {
                self.group_metadata.insert(key, value.clone());
            }
            table::TC_TOKEN => {
                self.tc_tokens.insert(key, decode(value)?);
            }
            table::SENT => {
                self.sent_messages
                    .insert(decode(key.as_bytes())?, decode(value)?);
            }
            table::PENDING => {
                self.pending_inbound
                    .insert(decode(key.as_bytes())?, decode(value)?);
            }
            table::MSG_SECRET => {
                self.msg_secrets
                    .insert(decode(key.as_bytes())?, decode(value)?);
            }
            table::DEVICE => {
                let mut device: Device = decode(value)?;
                // Not stored (runtime values), as wacore's SQLite store does not either.
                device.device_props =
                    Arc::new(whatsapp_rust::wacore::store::device::DEVICE_PROPS.clone());
                device.client_profile = whatsapp_rust::wacore::client_profile::ClientProfile::web();
                self.device = Some(device);
            }
            other => {
                return Err(StoreError::Validation(format!("unknown table {other}")));
            }
        }
        Ok(())
    }
}

/// A real session's keys, shared through the cluster's vault. See the module docs.
pub struct SharedKeys {
    instance_id: String,
    vault: Arc<dyn SessionVault>,
    /// Held across a call's vault write: one instance's writes are applied in order.
    model: Mutex<Model>,
    next_device_id: AtomicI32,
}

impl SharedKeys {
    /// Loads `instance_id`'s keys from `vault` (none: a session not linked yet).
    pub async fn open(
        vault: Arc<dyn SessionVault>,
        instance_id: &str,
    ) -> std::result::Result<SharedKeys, crate::error::StoreError> {
        let records = vault.load_keys(instance_id).await?;
        Ok(SharedKeys {
            model: Mutex::new(Model::load(instance_id, records)),
            instance_id: instance_id.to_owned(),
            vault,
            next_device_id: AtomicI32::new(1),
        })
    }

    /// Writes `changes` through to the vault; the caller applies them to the model after.
    async fn write(&self, changes: Changes) -> Result<()> {
        if changes.0.is_empty() {
            return Ok(());
        }
        let batch = KeyBatch {
            clear: false,
            writes: changes.0,
        };
        self.vault
            .write_keys(&self.instance_id, batch)
            .await
            .map_err(|err| match err {
                VaultError::Fenced => StoreError::Database(Box::new(err)),
                VaultError::Store(inner) => StoreError::Connection(Box::new(inner)),
            })
    }

    async fn put_one(&self, table: &'static str, key: &str, value: Vec<u8>) -> Result<()> {
        let mut changes = Changes::default();
        changes.put(table, key, value);
        self.write(changes).await
    }

    async fn delete_one(&self, table: &'static str, key: &str) -> Result<()> {
        let mut changes = Changes::default();
        changes.delete(table, key);
        self.write(changes).await
    }
}

#[async_trait]
impl SignalStore for SharedKeys {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::IDENTITY, address, key.to_vec()).await?;
        m.identities.insert(address.to_owned(), key);
        Ok(())
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (address, key) in identities {
            changes.put(table::IDENTITY, address.as_ref(), key.to_vec());
        }
        self.write(changes).await?;
        for (address, key) in identities {
            m.identities.insert(address.to_string(), *key);
        }
        Ok(())
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        Ok(self.model.lock().await.identities.get(address).copied())
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::IDENTITY, address).await?;
        m.identities.remove(address);
        Ok(())
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.model.lock().await.sessions.get(address).cloned())
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::SESSION, address, session.to_vec())
            .await?;
        m.sessions
            .insert(address.to_owned(), Bytes::copy_from_slice(session));
        Ok(())
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (address, session) in sessions {
            changes.put(table::SESSION, address.as_ref(), session.to_vec());
        }
        self.write(changes).await?;
        for (address, session) in sessions {
            m.sessions.insert(address.to_string(), session.clone());
        }
        Ok(())
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::SESSION, address).await?;
        m.sessions.remove(address);
        Ok(())
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        Ok(self.model.lock().await.sessions.contains_key(address))
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        fn matches(addr: &str, user: &str) -> bool {
            addr.strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
        }
        let m = self.model.lock().await;
        Ok(m.sessions.keys().any(|k| matches(k, user))
            || m.identities.keys().any(|k| matches(k, user)))
    }

    async fn store_prekey(&self, id: u32, record: &[u8], _uploaded: bool) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::PREKEY, &id.to_string(), record.to_vec())
            .await?;
        m.prekeys.insert(id, Bytes::copy_from_slice(record));
        Ok(())
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], _uploaded: bool) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (id, record) in keys {
            changes.put(table::PREKEY, id.to_string(), record.to_vec());
        }
        self.write(changes).await?;
        for (id, record) in keys {
            m.prekeys.insert(*id, record.clone());
        }
        Ok(())
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self.model.lock().await.prekeys.get(&id).cloned())
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let m = self.model.lock().await;
        Ok(ids
            .iter()
            .filter_map(|id| m.prekeys.get(id).map(|r| (*id, r.clone())))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, _ids: &[u32]) -> Result<()> {
        // Nothing reads the flag back; what matters is not to bring removed keys back.
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::PREKEY, &id.to_string()).await?;
        m.prekeys.remove(&id);
        Ok(())
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        Ok(self
            .model
            .lock()
            .await
            .prekeys
            .keys()
            .copied()
            .max()
            .unwrap_or(0))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::SIGNED_PREKEY, &id.to_string(), record.to_vec())
            .await?;
        m.signed_prekeys.insert(id, record.to_vec());
        Ok(())
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.model.lock().await.signed_prekeys.get(&id).cloned())
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        Ok(self
            .model
            .lock()
            .await
            .signed_prekeys
            .iter()
            .map(|(id, record)| (*id, record.clone()))
            .collect())
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::SIGNED_PREKEY, &id.to_string())
            .await?;
        m.signed_prekeys.remove(&id);
        Ok(())
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::SENDER_KEY, address, record.to_vec())
            .await?;
        m.sender_keys.insert(address.to_owned(), record.to_vec());
        Ok(())
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (address, record) in sender_keys {
            changes.put(table::SENDER_KEY, address.as_ref(), record.to_vec());
        }
        self.write(changes).await?;
        for (address, record) in sender_keys {
            m.sender_keys.insert(address.to_string(), record.to_vec());
        }
        Ok(())
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.model.lock().await.sender_keys.get(address).cloned())
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::SENDER_KEY, address).await?;
        m.sender_keys.remove(address);
        Ok(())
    }
}

#[async_trait]
impl AppSyncStore for SharedKeys {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        Ok(self.model.lock().await.sync_keys.get(key_id).cloned())
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        changes
            .put(table::SYNC_KEY, hex(key_id), encode(&key)?)
            .put(table::LATEST_SYNC_KEY, "", key_id.to_vec());
        self.write(changes).await?;
        m.sync_keys.insert(key_id.to_vec(), key);
        m.latest_sync_key_id = Some(key_id.to_vec());
        Ok(())
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self
            .model
            .lock()
            .await
            .versions
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::VERSION, name, encode(&state)?).await?;
        m.versions.insert(name.to_owned(), state);
        Ok(())
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for mutation in mutations {
            let key = compose(&(name, hex(&mutation.index_mac)));
            changes.put(table::MUTATION_MAC, key, mutation.value_mac.clone());
        }
        self.write(changes).await?;
        for mutation in mutations {
            m.mutation_macs.insert(
                (name.to_owned(), mutation.index_mac.clone()),
                mutation.value_mac.clone(),
            );
        }
        Ok(())
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .model
            .lock()
            .await
            .mutation_macs
            .get(&(name.to_owned(), index_mac.to_vec()))
            .cloned())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for index in index_macs {
            changes.delete(table::MUTATION_MAC, compose(&(name, hex(index))));
        }
        self.write(changes).await?;
        for index in index_macs {
            m.mutation_macs.remove(&(name.to_owned(), index.clone()));
        }
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (n, index) in m.mutation_macs.keys() {
            if n == name {
                changes.delete(table::MUTATION_MAC, compose(&(n, hex(index))));
            }
        }
        self.write(changes).await?;
        m.mutation_macs.retain(|(n, _), _| n != name);
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.model.lock().await.latest_sync_key_id.clone())
    }
}

#[async_trait]
impl ProtocolStore for SharedKeys {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .model
            .lock()
            .await
            .sender_key_devices
            .get(group_jid)
            .map(|devices| devices.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (device, has_key) in entries {
            changes.put(
                table::SENDER_KEY_DEVICE,
                compose(&(group_jid, device)),
                encode(has_key)?,
            );
        }
        self.write(changes).await?;
        let devices = m
            .sender_key_devices
            .entry(group_jid.to_owned())
            .or_default();
        for (device, has_key) in entries {
            devices.insert((*device).to_owned(), *has_key);
        }
        Ok(())
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for device in m.sender_key_devices.get(group_jid).into_iter().flatten() {
            changes.delete(table::SENDER_KEY_DEVICE, compose(&(group_jid, device.0)));
        }
        self.write(changes).await?;
        m.sender_key_devices.remove(group_jid);
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (group, devices) in &m.sender_key_devices {
            for device in devices.keys() {
                if device_jids.contains(&device.as_str()) {
                    changes.delete(table::SENDER_KEY_DEVICE, compose(&(group, device)));
                }
            }
        }
        self.write(changes).await?;
        for devices in m.sender_key_devices.values_mut() {
            devices.retain(|jid, _| !device_jids.contains(&jid.as_str()));
        }
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for (group, devices) in &m.sender_key_devices {
            for device in devices.keys() {
                changes.delete(table::SENDER_KEY_DEVICE, compose(&(group, device)));
            }
        }
        self.write(changes).await?;
        m.sender_key_devices.clear();
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        Ok(self.model.lock().await.lid_mappings.get(lid).cloned())
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let m = self.model.lock().await;
        Ok(m.pn_to_lid
            .get(phone)
            .and_then(|lid| m.lid_mappings.get(lid))
            .cloned())
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        let mut m = self.model.lock().await;
        // The phone this LID had before loses its reverse entry.
        let old_phone = m
            .lid_mappings
            .get(&entry.lid)
            .filter(|old| old.phone_number != entry.phone_number)
            .map(|old| old.phone_number.clone());
        let mut changes = Changes::default();
        if let Some(old_phone) = &old_phone {
            changes.delete(table::PN, old_phone.clone());
        }
        changes
            .put(
                table::PN,
                entry.phone_number.clone(),
                entry.lid.clone().into_bytes(),
            )
            .put(table::LID, entry.lid.clone(), encode(entry)?);
        self.write(changes).await?;
        if let Some(old_phone) = old_phone {
            m.pn_to_lid.remove(&old_phone);
        }
        m.pn_to_lid
            .insert(entry.phone_number.clone(), entry.lid.clone());
        m.lid_mappings.insert(entry.lid.clone(), entry.clone());
        Ok(())
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        Ok(self
            .model
            .lock()
            .await
            .lid_mappings
            .values()
            .cloned()
            .collect())
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(
            table::BASE_KEY,
            &compose(&(address, message_id)),
            base_key.to_vec(),
        )
        .await?;
        m.base_keys.insert(
            (address.to_owned(), message_id.to_owned()),
            base_key.to_vec(),
        );
        Ok(())
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .model
            .lock()
            .await
            .base_keys
            .get(&(address.to_owned(), message_id.to_owned()))
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::BASE_KEY, &compose(&(address, message_id)))
            .await?;
        m.base_keys
            .remove(&(address.to_owned(), message_id.to_owned()));
        Ok(())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::DEVICE_LIST, &record.user, encode(&record)?)
            .await?;
        m.device_lists.insert(record.user.clone(), record);
        Ok(())
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let mut m = self.model.lock().await;
        let mut changes = Changes::default();
        for record in &records {
            changes.put(table::DEVICE_LIST, record.user.clone(), encode(record)?);
        }
        self.write(changes).await?;
        for record in records {
            m.device_lists.insert(record.user.clone(), record);
        }
        Ok(())
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        Ok(self.model.lock().await.device_lists.get(user).cloned())
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::DEVICE_LIST, user).await?;
        m.device_lists.remove(user);
        Ok(())
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .model
            .lock()
            .await
            .group_metadata
            .get(group_jid)
            .cloned())
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::GROUP, group_jid, blob.to_vec()).await?;
        m.group_metadata.insert(group_jid.to_owned(), blob.to_vec());
        Ok(())
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::GROUP, group_jid).await?;
        m.group_metadata.remove(group_jid);
        Ok(())
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        Ok(self.model.lock().await.tc_tokens.get(jid).cloned())
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::TC_TOKEN, jid, encode(entry)?).await?;
        m.tc_tokens.insert(jid.to_owned(), entry.clone());
        Ok(())
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        self.delete_one(table::TC_TOKEN, jid).await?;
        m.tc_tokens.remove(jid);
        Ok(())
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        Ok(self.model.lock().await.tc_tokens.keys().cloned().collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        // A row goes only when both its received token and its sender bucket are stale.
        let live = |entry: &TcTokenEntry| {
            let token_live = !entry.token.is_empty() && entry.token_timestamp >= token_cutoff;
            let sender_live = entry.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
            token_live || sender_live
        };
        expire(
            self,
            table::TC_TOKEN,
            |m| &mut m.tc_tokens,
            String::clone,
            |e| !live(e),
        )
        .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let mut m = self.model.lock().await;
        let entry = match m.tc_tokens.get(jid) {
            Some(entry) => TcTokenEntry {
                sender_timestamp: Some(
                    entry
                        .sender_timestamp
                        .map_or(sender_timestamp, |e| e.max(sender_timestamp)),
                ),
                ..entry.clone()
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.put_one(table::TC_TOKEN, jid, encode(&entry)?).await?;
        m.tc_tokens.insert(jid.to_owned(), entry);
        Ok(())
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let mut m = self.model.lock().await;
        let entry = match m.tc_tokens.get(jid) {
            // Newer wins: a stale write does not replace a fresher token.
            Some(entry) if !entry.token.is_empty() && token_timestamp < entry.token_timestamp => {
                return Ok(());
            }
            Some(entry) => TcTokenEntry {
                token: token.to_vec(),
                token_timestamp,
                sender_timestamp: entry.sender_timestamp,
            },
            None => TcTokenEntry {
                token: token.to_vec(),
                token_timestamp,
                sender_timestamp: None,
            },
        };
        self.put_one(table::TC_TOKEN, jid, encode(&entry)?).await?;
        m.tc_tokens.insert(jid.to_owned(), entry);
        Ok(())
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let now = whatsapp_rust::wacore::time::now_secs();
        let mut m = self.model.lock().await;
        let key = (chat_jid.to_owned(), message_id.to_owned());
        let evicted = if m.sent_messages.len() >= MAX_SENT_MESSAGES {
            oldest_sent(&m.sent_messages)
        } else {
            Vec::new()
        };
        let mut changes = Changes::default();
        for old in &evicted {
            changes.delete(table::SENT, compose(old));
        }
        changes.put(table::SENT, compose(&key), encode(&(payload, now))?);
        self.write(changes).await?;
        for old in &evicted {
            m.sent_messages.remove(old);
        }
        m.sent_messages.insert(key, (payload.to_vec(), now));
        Ok(())
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let mut m = self.model.lock().await;
        let key = (chat_jid.to_owned(), message_id.to_owned());
        if !m.sent_messages.contains_key(&key) {
            return Ok(None);
        }
        self.delete_one(table::SENT, &compose(&key)).await?;
        Ok(m.sent_messages.remove(&key).map(|(payload, _)| payload))
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        expire(
            self,
            table::SENT,
            |m| &mut m.sent_messages,
            compose,
            |(_, at)| *at < cutoff_timestamp,
        )
        .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let now = whatsapp_rust::wacore::time::now_secs();
        let mut m = self.model.lock().await;
        let key = (chat.to_owned(), sender.to_owned(), id.to_owned());
        self.put_one(table::PENDING, &compose(&key), encode(&(message, now))?)
            .await?;
        m.pending_inbound.insert(key, (message.to_vec(), now));
        Ok(())
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = (chat.to_owned(), sender.to_owned(), id.to_owned());
        Ok(self
            .model
            .lock()
            .await
            .pending_inbound
            .get(&key)
            .map(|(message, _)| message.clone()))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let mut m = self.model.lock().await;
        let key = (chat.to_owned(), sender.to_owned(), id.to_owned());
        self.delete_one(table::PENDING, &compose(&key)).await?;
        m.pending_inbound.remove(&key);
        Ok(())
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        expire(
            self,
            table::PENDING,
            |m| &mut m.pending_inbound,
            compose,
            |(_, at)| *at < cutoff_timestamp,
        )
        .await
    }
}

/// Removes the rows of one map for which `expired` holds: their deletions go to the vault
/// first. Returns how many went.
async fn expire<K, V>(
    keys: &SharedKeys,
    table: &'static str,
    map: fn(&mut Model) -> &mut HashMap<K, V>,
    key_of: impl Fn(&K) -> String,
    expired: impl Fn(&V) -> bool,
) -> Result<u32>
where
    K: Clone + Eq + std::hash::Hash,
{
    let mut m = keys.model.lock().await;
    let gone: Vec<K> = map(&mut m)
        .iter()
        .filter(|(_, v)| expired(v))
        .map(|(k, _)| k.clone())
        .collect();
    let mut changes = Changes::default();
    for key in &gone {
        changes.delete(table, key_of(key));
    }
    keys.write(changes).await?;
    let rows = map(&mut m);
    for key in &gone {
        rows.remove(key);
    }
    Ok(gone.len() as u32)
}

/// The sent messages to evict when the cap is reached: the oldest, down to 3/4 of it.
fn oldest_sent(sent: &HashMap<SentKey, (Vec<u8>, i64)>) -> Vec<SentKey> {
    let target = MAX_SENT_MESSAGES * 3 / 4;
    let count = sent.len().saturating_sub(target);
    let mut by_age: Vec<(&i64, &SentKey)> = sent.iter().map(|(k, (_, at))| (at, k)).collect();
    by_age.sort();
    by_age
        .into_iter()
        .take(count)
        .map(|(_, k)| k.clone())
        .collect()
}

#[async_trait]
impl MsgSecretStore for SharedKeys {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        let mut m = self.model.lock().await;
        // Later entries of the batch merge into earlier ones, as into stored rows.
        let mut merged: HashMap<InboundKey, (MessageSecret, i64, i64)> = HashMap::new();
        for entry in entries {
            let key = (
                entry.chat.to_string(),
                entry.sender.to_string(),
                entry.msg_id.to_string(),
            );
            let row = match merged.get(&key).or_else(|| m.msg_secrets.get(&key)) {
                Some((_, expires_at, message_ts)) => (
                    entry.secret,
                    merge_msg_secret_expiry(*expires_at, entry.expires_at),
                    merge_msg_secret_message_ts(*message_ts, entry.message_ts),
                ),
                None => (entry.secret, entry.expires_at, entry.message_ts),
            };
            merged.insert(key, row);
        }
        let mut changes = Changes::default();
        for (key, row) in &merged {
            changes.put(table::MSG_SECRET, compose(key), encode(row)?);
        }
        self.write(changes).await?;
        m.msg_secrets.extend(merged);
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let key = (chat.to_owned(), sender.to_owned(), msg_id.to_owned());
        Ok(self
            .model
            .lock()
            .await
            .msg_secrets
            .get(&key)
            .map(|(secret, _, message_ts)| (secret.to_vec(), *message_ts)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        // No deadline (0) never expires.
        expire(
            self,
            table::MSG_SECRET,
            |m| &mut m.msg_secrets,
            compose,
            |(_, expires_at, _)| *expires_at != 0 && *expires_at <= cutoff_timestamp,
        )
        .await
    }
}

#[async_trait]
impl DeviceStore for SharedKeys {
    async fn save(&self, device: &Device) -> Result<()> {
        let mut m = self.model.lock().await;
        self.put_one(table::DEVICE, "", encode(device)?).await?;
        m.device = Some(device.clone());
        Ok(())
    }

    async fn load(&self) -> Result<Option<Device>> {
        Ok(self.model.lock().await.device.clone())
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.model.lock().await.device.is_some())
    }

    async fn create(&self) -> Result<i32> {
        let mut m = self.model.lock().await;
        if m.device.is_none() {
            let device = Device::new();
            self.put_one(table::DEVICE, "", encode(&device)?).await?;
            m.device = Some(device);
        }
        Ok(self.next_device_id.fetch_add(1, Ordering::Relaxed))
    }
}
