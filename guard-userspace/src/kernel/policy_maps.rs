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
}
