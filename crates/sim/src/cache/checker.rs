//! Invariants of the cache simulation, checked after every step.
//!
//! - **SWMR**: per key, at most one node holds the line in M or E, and then no other node holds
//!   a valid copy (a copy is valid while its node would serve it: the home's lease is valid).
//! - **Fresh copies** (the ghost variable of the German-protocol models): every valid copy holds
//!   the newest version ever written, and a version always names the same value.
//! - **Data value**: a completed read returns a value some client wrote (values are unique), a
//!   version always names the same value, and the version is no older than the last write
//!   completed before the read was issued.
//! - **Lease**: a read served from a line at once happens less than `lease_ticks` after the
//!   home last sent that node a confirmation (heartbeat answer or grant) it received.
//! - **Durability after flush**: the backing store holds the newest version of every key.
//! - **Node crash** ([`Checker::on_crash`]): the only writes that may be lost are, under
//!   write-back, the writes the dead node acknowledged whose version had not reached the backing
//!   store when it died (and, under either policy, writes never acknowledged). Under
//!   write-through nothing completed may be lost: the next read must still return the last
//!   completed write.

use std::collections::{BTreeMap, BTreeSet};

use distsync_cache::{CacheNode, HomeSelector, Key, LineData, LineKey, NodeId, Value, Version};

/// Ghost state and history the invariants are checked against.
#[derive(Debug, Default)]
pub struct Checker {
    /// Newest version of each key ever seen in a line.
    newest: BTreeMap<Key, Version>,
    /// The value each (key, version) was seen with (in a line or a read).
    values: BTreeMap<(Key, Version), Option<Value>>,
    /// Every value a client asked to write, per key (the simulation makes values unique).
    issued: BTreeSet<(Key, Value)>,
    /// Newest version of each key whose write completed.
    completed_write: BTreeMap<Key, Version>,
    /// The node that acknowledged each completed (key, version).
    acknowledged_by: BTreeMap<(Key, Version), NodeId>,
    /// Versions forgotten at a crash, with their values: they may still reappear (a write the
    /// dead node sent before it died can still land), which is allowed — loss is permitted,
    /// not required.
    forgotten: BTreeSet<(Key, Version, Option<Value>)>,
    /// Keys that existed when a node crashed: a write the dead node sent but never saw
    /// acknowledged (nor any checker saw in a valid line) may still land in the backing store.
    crashed_keys: BTreeSet<Key>,
    /// Writes forgiven by the write-back carve-out (for the report).
    pub forgiven_writes: u64,
    /// (node, home) -> newest send tick of a confirmation the node received from the home.
    confirmed: BTreeMap<(NodeId, NodeId), u64>,
    lease_ticks: u64,
}

impl Checker {
    /// A checker for leases of `lease_ticks`.
    pub fn new(lease_ticks: u64) -> Self {
        Self {
            lease_ticks,
            ..Self::default()
        }
    }

    /// Node `node` received a confirmation from `home` that `home` sent at `sent_tick`.
    pub fn on_confirmation(&mut self, node: NodeId, home: NodeId, sent_tick: u64) {
        let entry = self.confirmed.entry((node, home)).or_insert(sent_tick);
        *entry = (*entry).max(sent_tick);
    }

    /// The version a read issued now must at least return.
    pub fn required_version(&self, key: &Key) -> Version {
        self.completed_write.get(key).copied().unwrap_or_default()
    }

    /// A client asked to write `value` under `key`.
    pub fn on_write_issued(&mut self, key: &Key, value: &Value) {
        self.issued.insert((key.clone(), value.clone()));
    }

    /// A write of `key` completed with `version`, acknowledged by `node`.
    pub fn on_write_completed(&mut self, key: &Key, version: Version, node: NodeId, _tick: u64) {
        self.acknowledged_by.insert((key.clone(), version), node);
        let entry = self.completed_write.entry(key.clone()).or_default();
        *entry = (*entry).max(version);
        let newest = self.newest.entry(key.clone()).or_default();
        *newest = (*newest).max(version);
    }

    /// `node` adopted a new membership view: confirmations it received before no longer count
    /// (its leases start over).
    pub fn on_view_adopted(&mut self, node: NodeId) {
        self.confirmed.retain(|(to, _), _| *to != node);
    }

    /// `dead` crashed. `backing` is the backing store now, `surviving` the newest version of
    /// each key in a surviving node's lines. Returns, per key whose last completed write is
    /// forgiven, the version reads must still reach (reads outstanding now are lowered to it).
    ///
    /// The carve-out, exactly: under write-back (`write_back`), if the last completed write of
    /// a key was acknowledged by `dead` and its version is above the backing store's, then every
    /// completed write above the backing store's version must have been acknowledged by `dead`
    /// too (else it is a violation later: it is still required), and those are forgiven. Under
    /// write-through nothing completed is forgiven. Versions no survivor holds and no completed
    /// write names (unacknowledged writes of the dead node) are forgotten under both policies,
    /// so the versions may be written again with other values.
    pub fn on_crash(
        &mut self,
        dead: NodeId,
        write_back: bool,
        backing: &BTreeMap<Key, LineData>,
        surviving: &BTreeMap<Key, Version>,
    ) -> BTreeMap<Key, Version> {
        let mut floors = BTreeMap::new();
        let keys: Vec<Key> = self.newest.keys().cloned().collect();
        for key in keys {
            self.crashed_keys.insert(key.clone());
            let stored = backing
                .get(&key)
                .map(|data| data.version)
                .unwrap_or_default();
            let completed = self.completed_write.get(&key).copied().unwrap_or_default();
            let by_dead = self.acknowledged_by.get(&(key.clone(), completed)) == Some(&dead);
            let mut required = completed;
            if write_back && by_dead && completed > stored {
                // Keep every completed write above the backing store that another node
                // acknowledged: only the dead node's own writes are forgiven.
                let kept = self
                    .acknowledged_by
                    .range((key.clone(), stored)..=(key.clone(), completed))
                    .filter(|((_, version), node)| **node != dead && *version > stored)
                    .map(|((_, version), _)| *version)
                    .max()
                    .unwrap_or(stored);
                self.forgiven_writes += self
                    .acknowledged_by
                    .range((key.clone(), kept)..=(key.clone(), completed))
                    .filter(|((_, version), node)| **node == dead && *version > kept)
                    .count() as u64;
                required = kept;
                self.completed_write.insert(key.clone(), kept);
                floors.insert(key.clone(), kept);
            }
            let keep = required
                .max(stored)
                .max(surviving.get(&key).copied().unwrap_or_default());
            let newest = self.newest.entry(key.clone()).or_default();
            if *newest > keep {
                *newest = keep;
                let forgotten: Vec<(Version, Option<Value>)> = self
                    .values
                    .iter()
                    .filter(|((k, version), _)| *k == key && *version > keep)
                    .map(|((_, version), value)| (*version, value.clone()))
                    .collect();
                for (version, value) in forgotten {
                    self.forgotten.insert((key.clone(), version, value));
                }
                self.values
                    .retain(|(k, version), _| *k != key || *version <= keep);
                self.acknowledged_by
                    .retain(|(k, version), _| *k != key || *version <= keep);
            }
        }
        floors
    }

    /// Checks a completed read.
    ///
    /// # Errors
    /// The violated invariant, in words.
    pub fn on_read_completed(
        &mut self,
        key: &Key,
        data: &LineData,
        required: Version,
    ) -> Result<(), String> {
        if let Some(value) = &data.value
            && !self.issued.contains(&(key.clone(), value.clone()))
        {
            return Err(format!(
                "data value: read of {key:?} returned {value:?}, which no client wrote"
            ));
        }
        if data.version == Version(0) && data.value.is_some() {
            return Err(format!(
                "data value: read of {key:?} returned a value at version 0"
            ));
        }
        let recorded = self
            .values
            .entry((key.clone(), data.version))
            .or_insert_with(|| data.value.clone());
        if *recorded != data.value {
            return Err(format!(
                "data value: read of {key:?} returned {:?} for version {}, seen before as {recorded:?}",
                data.value, data.version
            ));
        }
        if data.version < required {
            return Err(format!(
                "data value: read of {key:?} returned version {} but version {required} was \
                 completed before the read was issued",
                data.version
            ));
        }
        Ok(())
    }

    /// Checks a read served at once by `node` at `tick` for a key homed on `home`.
    ///
    /// # Errors
    /// The violated invariant, in words.
    pub fn on_hit(&self, node: NodeId, home: NodeId, tick: u64) -> Result<(), String> {
        let confirmed = self.confirmed.get(&(node, home)).copied();
        if confirmed.is_none_or(|sent| tick >= sent + self.lease_ticks) {
            return Err(format!(
                "lease: node {node} served a hit at t={tick} for home {home}, last confirmed at \
                 {confirmed:?}, lease {} ticks",
                self.lease_ticks
            ));
        }
        Ok(())
    }

    /// Checks SWMR and freshness over every node's lines.
    ///
    /// # Errors
    /// The violated invariant, in words.
    pub fn check_lines<'a, H: HomeSelector + 'a>(
        &mut self,
        nodes: impl Iterator<Item = &'a CacheNode<H>>,
    ) -> Result<(), String> {
        let mut by_key: BTreeMap<&LineKey, Vec<(NodeId, &distsync_cache::Line)>> = BTreeMap::new();
        for node in nodes {
            // A copy counts while the node would serve it (its home's lease is valid): a copy
            // whose lease ran out may already be revoked by the home and is dropped before the
            // lease is renewed.
            for (key, line) in node.store().iter() {
                if node.lease_valid_for(key) {
                    by_key.entry(key).or_default().push((node.id(), line));
                }
            }
        }
        for (key, lines) in &by_key {
            for (node, line) in lines {
                let recorded = self
                    .values
                    .entry((key.to_key(), line.data.version))
                    .or_insert_with(|| line.data.value.clone());
                if *recorded != line.data.value {
                    return Err(format!(
                        "fresh copies: version {} of {key:?} holds {:?} on node {node}, but was \
                         written as {recorded:?}",
                        line.data.version, line.data.value
                    ));
                }
                let newest = self.newest.entry(key.to_key()).or_default();
                *newest = (*newest).max(line.data.version);
            }
            let owners: Vec<NodeId> = lines
                .iter()
                .filter(|(_, line)| line.state.is_owned())
                .map(|(node, _)| *node)
                .collect();
            if owners.len() > 1 || (owners.len() == 1 && lines.len() > 1) {
                let states: Vec<String> = lines
                    .iter()
                    .map(|(node, line)| format!("n{node}:{}", line.state))
                    .collect();
                return Err(format!("SWMR: key {key:?} held as {}", states.join(" ")));
            }
            let newest = self.newest[&key[..]];
            if let Some((node, line)) = lines.iter().find(|(_, line)| line.data.version != newest) {
                return Err(format!(
                    "fresh copies: node {node} holds {key:?} in {} at version {}, newest is {newest}",
                    line.state, line.data.version
                ));
            }
        }
        Ok(())
    }

    /// After every node flushed: the backing store holds the newest version of every key.
    ///
    /// # Errors
    /// The first key whose backing-store data is not the newest write.
    pub fn check_backing(&self, backing: &BTreeMap<Key, LineData>) -> Result<(), String> {
        for (key, newest) in &self.newest {
            let stored = backing.get(key).cloned().unwrap_or_default();
            if stored.version > *newest
                && self
                    .forgotten
                    .contains(&(key.clone(), stored.version, stored.value.clone()))
            {
                continue; // a forgiven write that landed after all
            }
            let unseen_write_of_a_dead_node = stored.version > *newest
                && self.crashed_keys.contains(key)
                && !self.values.contains_key(&(key.clone(), stored.version))
                && stored
                    .value
                    .as_ref()
                    .is_none_or(|value| self.issued.contains(&(key.clone(), value.clone())));
            if unseen_write_of_a_dead_node {
                continue;
            }
            let expected = self.values.get(&(key.clone(), *newest)).cloned();
            if stored.version != *newest
                || expected
                    .as_ref()
                    .is_some_and(|value| *value != stored.value)
            {
                return Err(format!(
                    "durability: after flush the backing store holds {key:?} = {:?} (version {}), \
                     the last write was {expected:?} (version {newest})",
                    stored.value, stored.version
                ));
            }
        }
        Ok(())
    }
}
