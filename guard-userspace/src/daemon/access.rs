//! Who is asking, and what they may do on the control plane.
//!
//! A caller's standing is decided per request, from its process as it is
//! at that moment (pinned against pid reuse, see `guard_host::peer`):
//! - a process inside any agent's cgroup has no say in the control plane,
//!   whatever its uid: it may not decide, change enforcement, read other
//!   agents' holds or the event stream, or start runs; it may list its own
//!   agent's pending holds, so that it can tell its user what waits;
//! - outside every agent, approvers (`[daemon] approvers`, root always)
//!   may do everything, readers (`[daemon] readers`) may read;
//! - a caller whose process is gone (or whose pid now names another
//!   process) is refused everything.

use super::{Shared, holds::By, registry::Registry};
use crate::events::{
    self,
    model::{Peer, Refusal, Subject},
};
use crate::policy::{Approvers, Policy};

/// Where the caller's process sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Outside every agent cgroup.
    Outside,
    /// Inside this agent's cgroup (or below it: a run, a nested cgroup).
    Agent(String),
    /// The process is gone; nothing it asked for is done.
    Gone,
}

/// How the caller reached the daemon.
#[derive(Clone, Debug)]
enum Via {
    /// The control socket (or an event sink socket): SO_PEERCRED.
    Socket {
        uid: u32,
        gid: u32,
        pid: u32,
        groups: Vec<u32>,
    },
    /// The web page: a token's user. The root-only tokens file is the list
    /// of who may decide there; the page cannot tell which process sent
    /// the request (README, limits).
    Web { user: String },
}

/// A caller, as judged for one request.
#[derive(Clone, Debug)]
pub struct Caller {
    via: Via,
    pub place: Place,
    /// The caller's user name (or the web token's user).
    pub user: String,
}

/// Which agent, if any, has its cgroup at or above `cgroup` ("/a/b/c",
/// relative to the cgroup2 mount).
pub fn agent_of_cgroup<'r>(registry: &'r Registry, cgroup: &str) -> Option<&'r str> {
    let path = cgroup.trim_start_matches('/');
    registry
        .agents
        .values()
        .find(|a| {
            let agent = a.def.cgroup.as_str();
            path == agent
                || path
                    .strip_prefix(agent)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|a| a.def.name.as_str())
}

impl Caller {
    /// The peer of a control or sink connection, as it is now.
    pub fn of_peer(registry: &Registry, peer: &guard_host::peer::Peer) -> Self {
        // Read both facts pinned: each is the peer's only if it still exists.
        let place = match peer.cgroup() {
            None => Place::Gone,
            Some(cgroup) => match agent_of_cgroup(registry, &cgroup) {
                Some(agent) => Place::Agent(agent.to_owned()),
                None => Place::Outside,
            },
        };
        let groups = peer.groups().unwrap_or_default();
        Self {
            via: Via::Socket {
                uid: peer.uid,
                gid: peer.gid,
                pid: peer.pid,
                groups,
            },
            place,
            user: user_name(peer.uid),
        }
    }

    /// A web page user who presented a valid token.
    pub fn web(user: String) -> Self {
        Self {
            via: Via::Web { user: user.clone() },
            place: Place::Outside,
            user,
        }
    }

    pub fn uid(&self) -> Option<u32> {
        match &self.via {
            Via::Socket { uid, .. } => Some(*uid),
            Via::Web { .. } => None,
        }
    }

    pub fn gid(&self) -> Option<u32> {
        match &self.via {
            Via::Socket { gid, .. } => Some(*gid),
            Via::Web { .. } => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.via {
            Via::Socket { pid, .. } => Some(*pid),
            Via::Web { .. } => None,
        }
    }

    /// Whether the caller is root or listed in `list`, by uid or by a
    /// group its process is in (primary or supplementary, as now).
    pub fn is_member(&self, list: &Approvers) -> bool {
        let Via::Socket {
            uid, gid, groups, ..
        } = &self.via
        else {
            return false;
        };
        if *uid == 0 || list.uids.contains(uid) {
            return true;
        }
        list.groups.iter().any(|name| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .is_some_and(|g| g.gid.as_raw() == *gid || groups.contains(&g.gid.as_raw()))
        })
    }

    /// Approvers decide holds and change enforcement.
    pub fn is_approver(&self, policy: &Policy) -> bool {
        self.place == Place::Outside
            && match &self.via {
                Via::Web { .. } => true,
                Via::Socket { .. } => self.is_member(&policy.daemon.approvers),
            }
    }

    /// Readers (and approvers) see every agent's holds, grants, state and
    /// events.
    pub fn is_reader(&self, policy: &Policy) -> bool {
        self.is_approver(policy)
            || (self.place == Place::Outside
                && matches!(self.via, Via::Socket { .. })
                && self.is_member(&policy.daemon.readers))
    }

    /// Who did it, for decisions and actions.
    pub fn by(&self) -> By {
        By {
            uid: self.uid(),
            user: self.user.clone(),
        }
    }

    /// The `by` of refusal events.
    pub fn peer(&self) -> Peer {
        let mut by = match &self.via {
            Via::Socket { uid, pid, .. } => Peer {
                uid: Some(*uid),
                pid: Some(*pid),
                user: Some(self.user.clone()),
                ..Peer::default()
            },
            Via::Web { user } => Peer {
                user: Some(user.clone()),
                via: Some(events::model::Via::Web),
                ..Peer::default()
            },
        };
        if let Place::Agent(agent) = &self.place {
            by.agent = Some(agent.clone());
        }
        by
    }

    /// Whose refusal allowance a refusal draws on (see `refusals`).
    pub fn source(&self) -> String {
        let who = match &self.via {
            Via::Socket { uid, .. } => format!("uid {uid}"),
            Via::Web { user } => format!("web user {user}"),
        };
        match &self.place {
            Place::Outside => who,
            Place::Agent(agent) => format!("{who} in agent {agent}"),
            Place::Gone => format!("{who} (gone)"),
        }
    }

    /// Why the caller may not do something that needs `need`, if so.
    fn refusal(&self, policy: &Policy, need: Need) -> Option<String> {
        match &self.place {
            Place::Gone => {
                return Some(
                    "the calling process is gone (or its pid names another process now)".into(),
                );
            }
            Place::Agent(agent) => {
                return Some(format!(
                    "the caller is inside agent {agent}: agents have no say in the control plane"
                ));
            }
            Place::Outside => {}
        }
        match need {
            Need::Outside => None,
            Need::Approver if self.is_approver(policy) => None,
            Need::Reader if self.is_reader(policy) => None,
            Need::Approver => Some("not an approver ([daemon] approvers)".into()),
            Need::Reader => {
                Some("not a reader or approver ([daemon] readers, [daemon] approvers)".into())
            }
        }
    }

    /// Refuses unless the caller has `need`: a `control.refused` event
    /// (rate-limited) naming `op` and its `subject`, and an error.
    pub fn require(
        &self,
        shared: &Shared,
        need: Need,
        op: &str,
        subject: Option<Subject>,
    ) -> anyhow::Result<()> {
        let refusal = {
            let registry = shared.registry();
            self.refusal(&registry.policy, need)
        };
        let Some(reason) = refusal else {
            return Ok(());
        };
        let control = Refusal::new(op, self.peer(), reason.clone()).about(subject);
        shared.refusals.report(&self.source(), control);
        let who = match self.uid() {
            Some(uid) => format!("uid {uid} ({})", self.user),
            None => self.user.clone(),
        };
        anyhow::bail!("{op} refused for {who}: {reason}")
    }
}

/// What a request needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only that it is outside every agent (starting or joining a run:
    /// `runners` is checked by the session code).
    Outside,
    Reader,
    Approver,
}

pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let policy = crate::policy::parse(
            "t.toml",
            r#"
[daemon]
approvers = { uids = [1000] }
readers = { uids = [2000] }

[[agent]]
name = "a"
owner = "o"
purpose = "p"
cgroup = "guard/a"
"#,
        )
        .expect("policy");
        let mut r = Registry::new(policy.clone());
        r.agents.insert(
            1,
            super::super::registry::AgentState {
                agent_id: 1,
                def: policy.agents[0].clone(),
                cgroup_dir: "/sys/fs/cgroup/guard/a".into(),
                cgroup_id: 7,
                created: true,
                frozen: false,
            },
        );
        r
    }

    fn socket(uid: u32, place: Place) -> Caller {
        Caller {
            via: Via::Socket {
                uid,
                gid: 65534,
                pid: 42,
                groups: Vec::new(),
            },
            place,
            user: uid.to_string(),
        }
    }

    #[test]
    fn agents_are_found_by_whole_components() {
        let r = registry();
        assert_eq!(agent_of_cgroup(&r, "/guard/a"), Some("a"));
        assert_eq!(agent_of_cgroup(&r, "/guard/a/run-1/x"), Some("a"));
        assert_eq!(agent_of_cgroup(&r, "/guard/ab"), None);
        assert_eq!(agent_of_cgroup(&r, "/guard"), None);
        assert_eq!(agent_of_cgroup(&r, "/"), None);
    }

    #[test]
    fn inside_an_agent_nobody_is_approver_or_reader() {
        let r = registry();
        let p = &r.policy;
        let root_outside = socket(0, Place::Outside);
        assert!(root_outside.is_approver(p));
        let root_inside = socket(0, Place::Agent("a".into()));
        assert!(!root_inside.is_approver(p));
        assert!(!root_inside.is_reader(p));
        let reason = root_inside.refusal(p, Need::Approver).expect("refused");
        assert!(reason.contains("inside agent a"), "{reason}");
        assert!(root_inside.refusal(p, Need::Outside).is_some());
        assert!(socket(0, Place::Gone).refusal(p, Need::Reader).is_some());
    }

    #[test]
    fn readers_read_and_only_approvers_decide() {
        let r = registry();
        let p = &r.policy;
        let approver = socket(1000, Place::Outside);
        let reader = socket(2000, Place::Outside);
        let stranger = socket(65534, Place::Outside);
        assert!(approver.refusal(p, Need::Approver).is_none());
        assert!(reader.refusal(p, Need::Reader).is_none());
        assert!(reader.refusal(p, Need::Approver).is_some());
        assert!(stranger.refusal(p, Need::Reader).is_some());
        assert!(stranger.refusal(p, Need::Outside).is_none());
        let web = Caller::web("alice".into());
        assert!(web.is_approver(p));
        assert_eq!(web.peer().via, Some(events::model::Via::Web));
        assert_eq!(
            socket(0, Place::Agent("a".into())).peer().agent.as_deref(),
            Some("a")
        );
    }
}
