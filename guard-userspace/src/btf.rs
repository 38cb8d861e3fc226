//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel's /sys/kernel/btf/vmlinux. Rust eBPF objects get no CO-RE
//! relocations, so the LSM programs receive these offsets as globals instead
//! of hard-coding one kernel's layout.
use std::{fs, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}; the kernel needs CONFIG_DEBUG_INFO_BTF=y")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// (name_off, type id, offset field) for struct/union members.
    members: Vec<(u32, u32, u32)>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let types_raw = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        // Type id 0 is "void"; ids count from 1 in section order.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            members: Vec::new(),
        }];
        let mut at = 0usize;
        while at < types_raw.len() {
            let name_off = u32_at(types_raw, at)?;
            let info = u32_at(types_raw, at + 4)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            // Bytes of kind-specific data after the common 12-byte header.
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((
                            u32_at(types_raw, m)?,
                            u32_at(types_raw, m + 4)?,
                            u32_at(types_raw, m + 8)?,
                        ));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
                15 | 19 => vlen * 12,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF.., FUNC, FLOAT, TYPE_TAG
                _ => return Err(BtfError::Malformed("unknown BTF kind")),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// struct/union members as C does.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT
                    && self.name(t.name_off) == strukt.as_bytes()
                    && !t.members.is_empty()
            })
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find(id, member.as_bytes(), 0, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    fn find(&self, id: usize, member: &[u8], base_bits: u32, depth: u32) -> Option<u32> {
        let t = self.types.get(id)?;
        if depth > 8 {
            return None;
        }
        for &(name_off, type_id, offset) in &t.members {
            // With kind_flag, the low 24 bits are the bit offset.
            let bits = base_bits
                + if t.kind_flag {
                    offset & 0x00ff_ffff
                } else {
                    offset
                };
            if self.name(name_off) == member {
                return bits.is_multiple_of(8).then_some(bits / 8);
            }
            if name_off == 0 {
                let inner = self.resolve(type_id as usize);
                if let Some(found) = self.find(inner, member, bits, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Anonymous members are struct/union types directly in kernel BTF;
    /// anything else has no members to search.
    fn resolve(&self, id: usize) -> usize {
        match self.types.get(id) {
            Some(t) if matches!(t.kind, KIND_STRUCT | KIND_UNION) => id,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dentry_name_on_the_running_kernel() {
        // Every kernel agent-guard supports has BTF; this reads the real one.
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let d_name = btf
            .member_offset("dentry", "d_name")
            .expect("dentry.d_name");
        let name = btf.member_offset("qstr", "name").expect("qstr.name");
        // qstr { union { struct { hash; len; }; hash_len; }; name; }
        assert_eq!(name, 8);
        assert!(d_name > 0 && d_name < 128, "d_name at {d_name}");
        assert!(matches!(
            btf.member_offset("dentry", "no_such_member"),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not even close").is_err());
    }
}
