//! A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and enum
//! values, which is all the tracer needs to know about the running kernel's types.
//!
//! It follows `Documentation/bpf/btf.rst`: a header, a type section (one record per type,
//! ids from 1) and a string section. Anonymous struct and union members are searched through,
//! as C does, so `sk_buff.dev` is found inside its unnamed union.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors reading BTF or finding a type in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF {path}: {source} (is CONFIG_DEBUG_INFO_BTF=y?)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF, or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// No struct or union of that name.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// The struct has no member of that name (searched through anonymous members).
    #[error("kernel BTF: struct {ty} has no member {member}")]
    NoMember {
        /// The struct searched.
        ty: String,
        /// The member path asked for, e.g. `nd_net.net`.
        member: String,
    },
    /// The member was found but is not what the tracer reads there.
    #[error("kernel BTF: {ty}.{member} is {found} bytes, expected {expected}")]
    UnexpectedSize {
        /// The struct.
        ty: String,
        /// The member path.
        member: String,
        /// Its size in this kernel.
        found: u32,
        /// The size the tracer reads.
        expected: u32,
    },
}

/// One type record, reduced to what offset and enum look-ups need.
#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` for INT/STRUCT/UNION/ENUM/FLOAT, `type` for PTR/TYPEDEF/modifiers.
    size_or_type: u32,
    /// Members (STRUCT/UNION), as (name_off, type, offset word).
    members: Vec<(u32, u32, u32)>,
    /// Enumerators (ENUM/ENUM64), as (name_off, value).
    enumerators: Vec<(u32, i64)>,
    /// ARRAY: (element type, element count).
    array: Option<(u32, u32)>,
}

/// A member found in a struct: where it is and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
}

/// Parsed BTF: the types and the strings they name.
#[derive(Debug)]
pub struct Btf {
    /// Index 0 is `void`; type id N is `types[N]`.
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct and union ids by name (the first complete definition).
    structs: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw little-endian BTF (as in `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF)".into(),
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or_else(|| BtfError::Malformed(format!("{what} section out of bounds")))
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_or_type: 0,
            members: Vec::new(),
            enumerators: Vec::new(),
            array: None,
        }];
        let mut at = 0usize;
        while at < type_data.len() {
            let name_off = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut ty = Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                members: Vec::new(),
                enumerators: Vec::new(),
                array: None,
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                KIND_ARRAY => {
                    ty.array = Some((u32_at(type_data, at)?, u32_at(type_data, at + 8)?));
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    ty.members.reserve(vlen);
                    for _ in 0..vlen {
                        ty.members.push((
                            u32_at(type_data, at)?,
                            u32_at(type_data, at + 4)?,
                            u32_at(type_data, at + 8)?,
                        ));
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    let signed = kind_flag;
                    for _ in 0..vlen {
                        let raw = u32_at(type_data, at + 4)?;
                        let value = if signed {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        ty.enumerators.push((u32_at(type_data, at)?, value));
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let lo = u64::from(u32_at(type_data, at + 4)?);
                        let hi = u64::from(u32_at(type_data, at + 8)?);
                        ty.enumerators
                            .push((u32_at(type_data, at)?, ((hi << 32) | lo) as i64));
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC => at += 12 * vlen,
                other => {
                    return Err(BtfError::Malformed(format!(
                        "unknown type kind {other} (type id {})",
                        types.len()
                    )));
                }
            }
            types.push(ty);
        }
        if at != type_data.len() {
            return Err(BtfError::Malformed("type section ends mid-record".into()));
        }

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        let mut structs = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            if (ty.kind == KIND_STRUCT || ty.kind == KIND_UNION) && ty.name_off != 0 {
                let name = btf.name(ty.name_off).to_owned();
                structs.entry(name).or_insert(id as u32);
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let Some(rest) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type (0 for void, functions and unknown ids).
    fn size_of(&self, id: u32) -> u32 {
        let id = self.resolve(id);
        match self.ty(id) {
            Some(t) => match t.kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                    t.size_or_type
                }
                KIND_PTR => 8,
                KIND_ARRAY => t
                    .array
                    .map(|(elem, n)| self.size_of(elem).saturating_mul(n))
                    .unwrap_or(0),
                _ => 0,
            },
            None => 0,
        }
    }

    /// Byte offset of `member` in struct/union `id`, searching anonymous members; returns
    /// the offset and the member's type id.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.ty(self.resolve(id))?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for &(name_off, mty, off) in &t.members {
            let bit_off = if t.kind_flag { off & 0x00ff_ffff } else { off };
            if name_off == 0 {
                if let Some((inner, ity)) = self.find_member(mty, member, depth + 1) {
                    return Some((bit_off / 8 + inner, ity));
                }
            } else if self.name(name_off) == member {
                return Some((bit_off / 8, mty));
            }
        }
        None
    }

    /// Finds `path` (members separated by `.`, e.g. `nd_net.net`) in struct `ty`: its byte
    /// offset from the start of `ty` and its size.
    pub fn member(&self, ty: &str, path: &str) -> Result<Member, BtfError> {
        let mut id = *self
            .structs
            .get(ty)
            .ok_or_else(|| BtfError::NoStruct(ty.to_owned()))?;
        let mut offset = 0u32;
        for part in path.split('.') {
            let (off, mty) = self
                .find_member(id, part, 0)
                .ok_or_else(|| BtfError::NoMember {
                    ty: ty.to_owned(),
                    member: path.to_owned(),
                })?;
            offset += off;
            id = mty;
        }
        Ok(Member {
            offset,
            size: self.size_of(id),
        })
    }

    /// Like [`Btf::member`], and checks the member's size.
    pub fn member_sized(&self, ty: &str, path: &str, size: u32) -> Result<Member, BtfError> {
        let m = self.member(ty, path)?;
        if m.size != size {
            return Err(BtfError::UnexpectedSize {
                ty: ty.to_owned(),
                member: path.to_owned(),
                found: m.size,
                expected: size,
            });
        }
        Ok(m)
    }

    /// The enumerators of the named enum (ENUM or ENUM64), in declaration order, or `None`
    /// if this BTF has no enum of that name.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        self.types
            .iter()
            .find(|t| {
                (t.kind == KIND_ENUM || t.kind == KIND_ENUM64) && self.name(t.name_off) == name
            })
            .map(|t| {
                t.enumerators
                    .iter()
                    .map(|&(n, v)| (self.name(n).to_owned(), v))
                    .collect()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: types are (name, info, size_or_type, extra u32s).
    fn blob(strings: &[&str], types: &[(u32, u32, u32, Vec<u32>)]) -> (Vec<u8>, Vec<u32>) {
        let mut strs = vec![0u8];
        let mut offs = Vec::new();
        for s in strings {
            offs.push(strs.len() as u32);
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
        }
        let mut tys = Vec::new();
        for (name, info, sot, extra) in types {
            for w in [*name, *info, *sot].iter().chain(extra) {
                tys.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            tys.len() as u32,
            tys.len() as u32,
            strs.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&tys);
        out.extend_from_slice(&strs);
        (out, offs)
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        let names = [
            "int", "u16", "inner", "outer", "a", "b", "net", "pnet_t", "dev", "x",
        ];
        // string offsets: computed by blob()
        let (_, o) = blob(&names, &[]);
        let types = vec![
            // 1: int (4 bytes)
            (o[0], info(KIND_INT, 0, false), 4, vec![32]),
            // 2: u16
            (o[1], info(KIND_INT, 0, false), 2, vec![16]),
            // 3: struct inner { int net; }  (size 4)
            (o[2], info(KIND_STRUCT, 1, false), 4, vec![o[6], 1, 0]),
            // 4: typedef inner pnet_t
            (o[7], info(KIND_TYPEDEF, 0, false), 3, vec![]),
            // 5: anonymous union { u16 a; int b; }
            (
                0,
                info(KIND_UNION, 2, false),
                4,
                vec![o[4], 2, 0, o[5], 1, 0],
            ),
            // 6: struct outer (bitfield-style offsets) { int x; union {..}; pnet_t dev; }
            (
                o[3],
                info(KIND_STRUCT, 3, true),
                16,
                vec![o[9], 1, 0, 0, 5, 64, o[8], 4, 96],
            ),
            // 7: enum e { A = 2, B = -1 } signed
            (
                o[4],
                info(KIND_ENUM, 2, true),
                4,
                vec![o[4], 2, o[5], u32::MAX],
            ),
        ];
        let (data, _) = blob(&names, &types);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(
            btf.member("outer", "x").unwrap(),
            Member { offset: 0, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "a").unwrap(),
            Member { offset: 8, size: 2 }
        );
        assert_eq!(
            btf.member("outer", "b").unwrap(),
            Member { offset: 8, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "dev.net").unwrap(),
            Member {
                offset: 12,
                size: 4
            }
        );
        assert!(matches!(
            btf.member("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member("nope", "x"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member_sized("outer", "a", 4),
            Err(BtfError::UnexpectedSize { found: 2, .. })
        ));
        assert_eq!(
            btf.enum_values("a").unwrap(),
            vec![("a".to_owned(), 2), ("b".to_owned(), -1)]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let (mut data, _) = blob(&["x"], &[(1, info(KIND_STRUCT, 5, false), 4, vec![])]);
        assert!(Btf::parse(&data).is_err());
        data.truncate(10);
        assert!(Btf::parse(&data).is_err());
    }

    /// Reads the running kernel's BTF when there is one (every kernel the tracer supports).
    #[test]
    fn reads_running_kernel() {
        if !crate::prereq::needs("reads_running_kernel", &[crate::prereq::BTF]) {
            return;
        }
        let btf = Btf::from_kernel().expect("the kernel's BTF is readable");
        let head = btf.member_sized("sk_buff", "head", 8).unwrap();
        let nh = btf.member_sized("sk_buff", "network_header", 2).unwrap();
        assert!(head.offset > 0 && nh.offset > 0);
        btf.member_sized("net_device", "nd_net.net", 8).unwrap();
        btf.member_sized("net", "ns.inum", 4).unwrap();
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(n, _)| n == "SKB_DROP_REASON_NETFILTER_DROP")
        );
    }
}
