//! Taking policy out of the kernel again: what a reload or a retired agent
//! needs besides the inserts in `mod.rs`.
use aya::maps::{LpmTrie, MapError, lpm_trie::Key};
use guard_common::{NetKey, NetRuleSet, PathKey, PathRuleValue};

use super::{CONNECT_PROGRAMS, Kernel, KernelError, map_err};

impl Kernel {
    pub fn remove_net_rules(
        &mut self,
        entries: &[(u32, NetKey, NetRuleSet)],
    ) -> Result<(), KernelError> {
        self.remove_lpm::<NetKey, NetRuleSet>("NET_RULES", entries.iter().map(|e| (e.0, e.1)))
    }

    pub fn remove_path_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.remove_lpm::<PathKey, PathRuleValue>("PATH_RULES", entries.iter().map(|e| (e.0, e.1)))
    }

    pub fn remove_subtree_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.remove_lpm::<PathKey, PathRuleValue>(
            "SUBTREE_RULES",
            entries.iter().map(|e| (e.0, e.1)),
        )
    }

    pub fn remove_unix_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.remove_lpm::<PathKey, PathRuleValue>("UNIX_RULES", entries.iter().map(|e| (e.0, e.1)))
    }

    fn remove_lpm<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: impl Iterator<Item = (u32, K)>,
    ) -> Result<(), KernelError> {
        let map = self.ebpf.map_mut(name).ok_or(KernelError::Missing(name))?;
        let mut trie: LpmTrie<_, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
        for (prefix_len, key) in keys {
            match trie.remove(&Key::new(prefix_len, key)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(())
    }

    /// The cgroup `cgroup_id` is no agent's any more.
    pub fn remove_agent(&mut self, cgroup_id: u64) -> Result<(), KernelError> {
        match self.agents_map()?.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("AGENTS")(e)),
        }
    }

    /// Detaches (and unpins) the connect programs from cgroup `cgroup_id`.
    pub fn detach_cgroup(&mut self, cgroup_id: u64) {
        let names: Vec<String> = CONNECT_PROGRAMS
            .iter()
            .map(|(name, _)| format!("{name}-{cgroup_id}"))
            .collect();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|a| names.iter().any(|n| n == a.name()));
        self.links = kept;
        for attachment in gone {
            attachment.detach();
        }
    }

    /// Whether the connect hold stopper (tp_btf/sys_exit) is attached.
    pub fn has_connect_hold_stopper(&self) -> bool {
        self.links
            .iter()
            .any(|a| a.name() == super::CONNECT_HOLD_STOPPER)
    }

    // The kernel's own lookups, for the tests that compare them with the
    // userspace matchers.

    /// Longest-prefix lookup in the kernel's own NET_RULES trie, as the
    /// connect programs do (tests compare it with the userspace matcher).
    #[cfg(test)]
    pub fn lookup_net(
        &self,
        agent_id: u32,
        addr: [u8; 16],
    ) -> Result<Option<NetRuleSet>, KernelError> {
        let map = self
            .ebpf
            .map("NET_RULES")
            .ok_or(KernelError::Missing("NET_RULES"))?;
        let trie: LpmTrie<_, NetKey, NetRuleSet> =
            LpmTrie::try_from(map).map_err(map_err("NET_RULES"))?;
        let key = Key::new(
            guard_common::NET_KEY_AGENT_BITS + 128,
            NetKey {
                agent_id: agent_id.to_be_bytes(),
                addr,
            },
        );
        match trie.get(&key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("NET_RULES")(e)),
        }
    }

    /// Longest-prefix lookup in PATH_RULES of "<path>/" followed by NUL,
    /// exactly the key the LSM programs build.
    #[cfg(test)]
    pub fn lookup_path(
        &self,
        agent_id: u32,
        path: &str,
    ) -> Result<Option<PathRuleValue>, KernelError> {
        self.lookup_prefix("PATH_RULES", agent_id, path)
    }

    /// Longest-prefix lookup of "<path>/" and NUL bytes in a path-keyed
    /// trie, the key the programs build. In PATH_RULES and UNIX_RULES that
    /// finds the longest rule prefix; SUBTREE_RULES entries end in the NUL,
    /// so there only the entry of exactly this directory matches.
    #[cfg(test)]
    pub fn lookup_prefix(
        &self,
        map: &'static str,
        agent_id: u32,
        path: &str,
    ) -> Result<Option<PathRuleValue>, KernelError> {
        let m = self.ebpf.map(map).ok_or(KernelError::Missing(map))?;
        let trie: LpmTrie<_, PathKey, PathRuleValue> =
            LpmTrie::try_from(m).map_err(map_err(map))?;
        let mut data = PathKey {
            agent_id: agent_id.to_be_bytes(),
            ..PathKey::default()
        };
        let text = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        let n = text.len().min(data.path.len());
        data.path[..n].copy_from_slice(&text.as_bytes()[..n]);
        let key = Key::new(
            guard_common::NET_KEY_AGENT_BITS + (guard_common::PATH_KEY_BYTES as u32) * 8,
            data,
        );
        match trie.get(&key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map)(e)),
        }
    }
}
