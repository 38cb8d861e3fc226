//! Scoped, time-limited approvals. One registry: the kernel maps it writes
//! (checked by the programs against CLOCK_BOOTTIME) and the seccomp decider
//! both follow it, so a grant means the same on every backend.
use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use parking_lot::{Mutex, MutexGuard};

use anyhow::{Context as _, Result, bail};
use aya::maps::lpm_trie::Key;
use guard_common::{Grant, NetGrantKey, grant_slot};

use crate::policy::path_key;
use serde_json::Value;

use crate::events::model;

/// What an approval covers beyond the one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Deletes at or below this path prefix.
    Subtree { prefix: String },
    /// Connects to this address (16 bytes, v4-mapped for IPv4) and port.
    Destination { addr: [u8; 16], port: u16 },
    /// Every held kind of the agent.
    Agent,
}

pub struct GrantInfo {
    pub id: u32,
    pub agent_id: u32,
    pub agent: String,
    pub scope: Scope,
    pub expires: SystemTime,
    pub by: String,
    pub reason: Option<String>,
}

impl GrantInfo {
    /// The grant as events and replies show it.
    pub fn to_event(&self) -> model::Grant {
        let scope = match &self.scope {
            Scope::Subtree { prefix } => model::GrantScope::Subtree {
                path: prefix.clone(),
            },
            Scope::Destination { addr, port } => {
                let ip = std::net::Ipv6Addr::from(*addr);
                let shown = ip
                    .to_ipv4_mapped()
                    .map_or(ip.to_string(), |v4| v4.to_string());
                model::GrantScope::Destination {
                    address: shown,
                    port: *port,
                }
            }
            Scope::Agent => model::GrantScope::Agent,
        };
        let left = self
            .expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        model::Grant {
            id: self.id,
            agent: self.agent.clone(),
            scope,
            expires: humantime::format_rfc3339_seconds(self.expires).to_string(),
            left_secs: left.as_secs(),
            by: self.by.clone(),
            reason: self.reason.clone().map(model::Text::message),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.to_event()).unwrap_or_default()
    }
}

pub use crate::kernel::KernelGrants;

/// The grants, and what the GRANTED slots were told about them.
#[derive(Default)]
struct Inner {
    grants: HashMap<u32, GrantInfo>,
    last_id: u32,
    /// Reloads under way: new id -> old id whose grants' kernel entries
    /// were copied to the new id (`copy_to`) and not yet `moved`.
    copies: HashMap<u32, u32>,
    /// GRANTED slot -> the count last written there (0s left out).
    published: HashMap<u32, u32>,
}

impl Inner {
    /// Each slot's count: a grant counts for its agent's slot, and for the
    /// slot of the id a reload copied it to.
    fn counts(&self) -> HashMap<u32, u32> {
        let mut want: HashMap<u32, u32> = HashMap::new();
        for g in self.grants.values() {
            *want.entry(grant_slot(g.agent_id)).or_default() += 1;
            for (&new, _) in self.copies.iter().filter(|(_, old)| **old == g.agent_id) {
                *want.entry(grant_slot(new)).or_default() += 1;
            }
        }
        want
    }

    /// Writes the GRANTED slots whose count changed. Called after a grant
    /// is added to `grants` and before its kernel entry is written, and
    /// after a kernel entry was taken out: a slot is never 0 while one of
    /// its agents has an entry. A count that cannot be raised is an error
    /// (the grant would be ignored); one that cannot be lowered only
    /// leaves the programs looking.
    fn publish(&mut self, k: &mut KernelGrants) -> Result<()> {
        let want = self.counts();
        for (&slot, &n) in &want {
            if self.published.get(&slot) != Some(&n) {
                k.granted
                    .set(slot, n, 0)
                    .with_context(|| format!("writing GRANTED slot {slot}"))?;
                self.published.insert(slot, n);
            }
        }
        let gone: Vec<u32> = self
            .published
            .keys()
            .filter(|s| !want.contains_key(s))
            .copied()
            .collect();
        for slot in gone {
            if k.granted.set(slot, 0, 0).is_ok() {
                self.published.remove(&slot);
            }
        }
        Ok(())
    }
}

pub struct Grants {
    inner: Mutex<Inner>,
    kernel: Mutex<KernelGrants>,
}

fn boot_ns_after(d: Duration) -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    now.saturating_add(d.as_nanos() as u64)
}

fn within(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Grants {
    pub fn new(kernel: KernelGrants) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            kernel: Mutex::new(kernel),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn lock_kernel(&self) -> MutexGuard<'_, KernelGrants> {
        self.kernel.lock()
    }

    /// Lowers the GRANTED slots after kernel entries were taken out.
    fn republish(&self) {
        let mut inner = self.lock();
        if let Err(err) = inner.publish(&mut self.lock_kernel()) {
            tracing::warn!(error = %format!("{err:#}"), "lowering grant counts; the programs keep looking");
        }
    }

    /// Creates a grant and writes it where the kernel checks it.
    pub fn add(
        &self,
        agent_id: u32,
        agent: String,
        scope: Scope,
        lasts: Duration,
        by: String,
        reason: Option<String>,
    ) -> Result<model::Grant> {
        if lasts.is_zero() {
            bail!("a grant needs a duration (--for, e.g. 10m)");
        }
        let mut inner = self.lock();
        inner.last_id += 1;
        let id = inner.last_id;
        let value = Grant {
            expires_ns: boot_ns_after(lasts),
            grant_id: id,
            _pad: 0,
        };
        let info = GrantInfo {
            id,
            agent_id,
            agent,
            scope,
            expires: SystemTime::now() + lasts,
            by,
            reason,
        };
        let shown = info.to_event();
        let scope = info.scope.clone();
        // Counted in GRANTED before the programs can find it.
        inner.grants.insert(id, info);
        let mut k = self.lock_kernel();
        let written = inner.publish(&mut k).and_then(|()| {
            match &scope {
                Scope::Agent => k.agent.insert(agent_id, value, 0)?,
                Scope::Subtree { prefix } => {
                    let (len, key) = path_key(agent_id, prefix);
                    k.path.insert(&Key::new(len, key), value, 0)?;
                }
                Scope::Destination { addr, port } => k.net.insert(
                    NetGrantKey {
                        agent_id,
                        port: *port,
                        _pad: 0,
                        addr: *addr,
                    },
                    value,
                    0,
                )?,
            }
            Ok(())
        });
        if let Err(err) = written {
            inner.grants.remove(&id);
            let _ = inner.publish(&mut k);
            return Err(err);
        }
        Ok(shown)
    }

    /// The live grant of `agent_id` covering a delete of `path`, if any
    /// (the seccomp backend's check; the kernel makes the same one).
    pub fn covers_path(&self, agent_id: u32, path: &str) -> Option<u32> {
        let now = SystemTime::now();
        self.lock()
            .grants
            .values()
            .filter(|g| g.agent_id == agent_id && g.expires > now)
            .find(|g| match &g.scope {
                Scope::Agent => true,
                Scope::Subtree { prefix } => within(path, prefix),
                Scope::Destination { .. } => false,
            })
            .map(|g| g.id)
    }

    pub fn list(&self) -> Vec<Value> {
        let now = SystemTime::now();
        let inner = self.lock();
        let mut live: Vec<&GrantInfo> = inner.grants.values().filter(|g| g.expires > now).collect();
        live.sort_by_key(|g| g.id);
        live.iter().map(|g| g.to_json()).collect()
    }

    /// Removes a grant before its time; false if there is none.
    pub fn revoke(&self, id: u32) -> bool {
        let Some(g) = self.lock().grants.remove(&id) else {
            return false;
        };
        self.unmap(&g);
        self.republish();
        true
    }

    /// Forgets expired grants (the kernel already ignores them).
    pub fn expire(&self) {
        let now = SystemTime::now();
        let gone: Vec<GrantInfo> = {
            let mut inner = self.lock();
            let ids: Vec<u32> = inner
                .grants
                .values()
                .filter(|g| g.expires <= now)
                .map(|g| g.id)
                .collect();
            ids.iter()
                .filter_map(|id| inner.grants.remove(id))
                .collect()
        };
        for g in &gone {
            self.unmap(g);
        }
        if !gone.is_empty() {
            self.republish();
        }
    }

    /// A policy reload gave agent `old` the id `new`: copies its grants'
    /// kernel entries to the new id (call before the new id is in force),
    /// so no approval lapses over a reload.
    pub fn copy_to(&self, old: u32, new: u32) -> Result<()> {
        let mut inner = self.lock();
        let mut k = self.lock_kernel();
        // Counted under the new id before its entries are there.
        inner.copies.insert(new, old);
        inner.publish(&mut k)?;
        for g in inner.grants.values().filter(|g| g.agent_id == old) {
            match &g.scope {
                Scope::Agent => {
                    if let Ok(v) = k.agent.get(&old, 0) {
                        k.agent.insert(new, v, 0)?;
                    }
                }
                Scope::Subtree { prefix } => {
                    let (len, key) = path_key(old, prefix);
                    if let Ok(v) = k.path.get(&Key::new(len, key), 0) {
                        let (len, key) = path_key(new, prefix);
                        k.path.insert(&Key::new(len, key), v, 0)?;
                    }
                }
                Scope::Destination { addr, port } => {
                    let key = |agent_id| NetGrantKey {
                        agent_id,
                        port: *port,
                        _pad: 0,
                        addr: *addr,
                    };
                    if let Ok(v) = k.net.get(&key(old), 0) {
                        k.net.insert(key(new), v, 0)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// After the reload is in force: the grants belong to `new`, and the
    /// kernel entries under `old` go.
    pub fn moved(&self, old: u32, new: u32) {
        let mut inner = self.lock();
        let mut stale = Vec::new();
        for g in inner.grants.values_mut().filter(|g| g.agent_id == old) {
            stale.push(GrantInfo {
                id: g.id,
                agent_id: old,
                agent: g.agent.clone(),
                scope: g.scope.clone(),
                expires: g.expires,
                by: String::new(),
                reason: None,
            });
            g.agent_id = new;
        }
        inner.copies.remove(&new);
        drop(inner);
        for g in &stale {
            self.unmap(g);
        }
        self.republish();
    }

    /// The agent `id` left the policy: its grants end.
    pub fn drop_agent(&self, id: u32) {
        let gone: Vec<GrantInfo> = {
            let mut inner = self.lock();
            let ids: Vec<u32> = inner
                .grants
                .values()
                .filter(|g| g.agent_id == id)
                .map(|g| g.id)
                .collect();
            ids.iter().filter_map(|i| inner.grants.remove(i)).collect()
        };
        for g in &gone {
            self.unmap(g);
        }
        self.republish();
    }

    /// Live grants of agent `id`.
    pub fn of_agent(&self, id: u32) -> Vec<Value> {
        let now = SystemTime::now();
        self.lock()
            .grants
            .values()
            .filter(|g| g.agent_id == id && g.expires > now)
            .map(GrantInfo::to_json)
            .collect()
    }

    fn unmap(&self, g: &GrantInfo) {
        let mut k = self.lock_kernel();
        // Only remove the entry if it is still this grant's (a newer grant
        // of the same scope replaces it).
        let _ = match &g.scope {
            Scope::Agent => match k.agent.get(&g.agent_id, 0) {
                Ok(v) if v.grant_id == g.id => k.agent.remove(&g.agent_id),
                _ => Ok(()),
            },
            Scope::Subtree { prefix } => {
                let (len, key) = path_key(g.agent_id, prefix);
                let key = Key::new(len, key);
                match k.path.get(&key, 0) {
                    Ok(v) if v.grant_id == g.id => k.path.remove(&key),
                    _ => Ok(()),
                }
            }
            Scope::Destination { addr, port } => {
                let key = NetGrantKey {
                    agent_id: g.agent_id,
                    port: *port,
                    _pad: 0,
                    addr: *addr,
                };
                match k.net.get(&key, 0) {
                    Ok(v) if v.grant_id == g.id => k.net.remove(&key),
                    _ => Ok(()),
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_membership_is_by_whole_components() {
        assert!(within("/srv/data/x", "/srv/data"));
        assert!(within("/srv/data", "/srv/data"));
        assert!(!within("/srv/database", "/srv/data"));
        assert!(within("/anything", "/"));
    }

    #[test]
    fn path_keys_match_the_rule_encoding() {
        let (len, key) = path_key(7, "/srv/data");
        assert_eq!(len, 32 + 8 * "/srv/data/".len() as u32);
        assert_eq!(&key.path[..10], b"/srv/data/");
        assert_eq!(key.agent_id, 7u32.to_be_bytes());
    }
}
