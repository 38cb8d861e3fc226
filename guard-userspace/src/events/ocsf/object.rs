//! The OCSF objects this project writes: the attributes OCSF 1.8.0
//! defines, with their OCSF names, borrowed from the typed event.
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Serialize;

use super::{Enum, PRODUCT};

/// The `ocsf` member.
#[derive(Serialize, JsonSchema)]
pub struct Ocsf<'a> {
    /// The event's kind, which names activity 99 (Other).
    #[serde(skip)]
    pub(super) kind: &'a str,
    pub class_uid: u32,
    pub class_name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'a str,
    pub type_uid: u64,
    pub type_name: &'static str,
    /// Milliseconds since the epoch.
    pub time: i64,
    pub severity_id: u32,
    pub severity: &'static str,
    pub status_id: u32,
    pub status: &'static str,
    /// Why, where the rule alone does not say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<&'a str>,
    /// How many events this one stands for (a count of suppressed ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<&'static str>,
    pub metadata: Metadata<'a>,
    pub device: Device<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<OcsfProcess<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File<'a>>,
    /// A rename's destination, a link's new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_result: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<Product>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<Api<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<Unmapped<'a>>,
}

#[derive(Serialize, JsonSchema)]
pub struct Metadata<'a> {
    pub version: &'static str,
    pub product: Product,
    pub profiles: [&'static str; 2],
    /// The line's `seq`.
    pub sequence: u64,
    /// The host's name; with `sequence` it names the event.
    pub log_provider: &'a str,
    /// Some string of the event was cut to its cap.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_truncated: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct Product {
    pub name: &'static str,
    pub vendor_name: &'static str,
    pub version: &'static str,
}

pub(super) const fn product() -> Product {
    Product {
        name: PRODUCT,
        vendor_name: PRODUCT,
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// The host the daemon guards (type Unknown: it does not tell a server
/// from a laptop).
#[derive(Serialize, JsonSchema)]
pub struct Device<'a> {
    pub type_id: u32,
    #[serde(rename = "type")]
    pub type_name: &'static str,
    pub hostname: &'a str,
}

/// Who acted: the agent (as the application), its run, whom it acts for,
/// and its process.
#[derive(Default, Serialize, JsonSchema)]
pub struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<&'a str>,
    /// The agent's cgroup id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<OcsfProcess<'a>>,
}

#[derive(Serialize, JsonSchema)]
pub struct Session<'a> {
    pub uid: &'a str,
}

#[derive(Default, Serialize, JsonSchema)]
pub struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Default, Serialize, JsonSchema)]
pub struct OcsfProcess<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptid: Option<u32>,
    /// A run's id, for a process OCSF knows only as the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_process: Option<Parent>,
}

#[derive(Serialize, JsonSchema)]
pub struct Parent {
    pub pid: u32,
}

#[derive(Serialize, JsonSchema)]
pub struct File<'a> {
    pub name: &'a str,
    pub type_id: u32,
    #[serde(rename = "type")]
    pub type_name: &'static str,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_folder: Option<&'a str>,
}

impl<'a> File<'a> {
    /// A file by its path; `(type_id, type)` from OCSF's file types.
    pub(super) fn at(path: &'a str, (type_id, type_name): Enum) -> Self {
        let (parent, name) = match path.rsplit_once('/') {
            Some(("", name)) => (Some("/"), name),
            Some((dir, name)) => (Some(dir), name),
            None => (None, path),
        };
        Self {
            name,
            type_id,
            type_name,
            path,
            parent_folder: parent,
        }
    }
}

pub(super) const REGULAR_FILE: Enum = (1, "Regular File");
pub(super) const FOLDER: Enum = (2, "Folder");

#[derive(Default, Serialize, JsonSchema)]
pub struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<&'a str>,
    /// A unix socket's path (or `@name` of an abstract one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

#[derive(Serialize, JsonSchema)]
pub struct ConnectionInfo {
    pub direction_id: u32,
    pub direction: &'static str,
    /// IP version; absent for unix sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_ver_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_ver: Option<&'static str>,
}

#[derive(Serialize, JsonSchema)]
pub struct Api<'a> {
    pub operation: &'a str,
}

/// The rule that decided.
#[derive(Serialize, JsonSchema)]
pub struct Policy<'a> {
    /// The rule as written (`default` for the agent's default).
    pub name: &'a str,
    /// FILE:LINE of the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<&'a str>,
}

/// What OCSF has no attribute for: the agent's owner, purpose and labels.
#[derive(Serialize, JsonSchema)]
pub struct Unmapped<'a> {
    pub agent: UnmappedAgent<'a>,
}

#[derive(Serialize, JsonSchema)]
pub struct UnmappedAgent<'a> {
    pub owner: &'a str,
    pub purpose: &'a str,
    pub cgroup: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
}
