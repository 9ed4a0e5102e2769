//! The `skb:kfree_skb` tracepoint as the running kernel describes it in tracefs: where each
//! field of its record is, and (in its `print fmt`) the names of the drop reasons.

use std::path::{Path, PathBuf};

/// Where tracefs is normally mounted, newest first.
pub const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Errors finding tracefs or reading a tracepoint's format.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is mounted nowhere and could not be mounted.
    #[error(
        "tracefs is not mounted at {} and mounting it failed: {source} \
         (mount it with `mount -t tracefs tracefs /sys/kernel/tracing`)",
        TRACEFS_MOUNTS.join(" or ")
    )]
    NotMounted {
        /// Why mounting failed.
        #[source]
        source: std::io::Error,
    },
    /// The tracepoint does not exist on this kernel.
    #[error("tracepoint {category}:{name} not found in {tracefs} (kernel too old?)")]
    NoTracepoint {
        /// Category, e.g. `skb`.
        category: String,
        /// Name, e.g. `kfree_skb`.
        name: String,
        /// The tracefs mount searched.
        tracefs: PathBuf,
    },
    /// The format file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The format file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The format file lacks a field the tracer reads, or has it with another size.
    #[error("{path}: field `{field}` {problem}")]
    Field {
        /// The format file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name, e.g. `skbaddr`.
    pub name: String,
    /// C declaration as written, e.g. `void * skbaddr`.
    pub decl: String,
    /// Byte offset in the record (which is what a tracepoint program's context points at).
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A parsed tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The file it came from.
    pub path: PathBuf,
    /// Tracepoint id.
    pub id: Option<u32>,
    /// All fields, common ones included.
    pub fields: Vec<Field>,
    /// The `print fmt:` line, verbatim.
    pub print_fmt: String,
}

impl Format {
    /// Parses the text of a format file.
    pub fn parse(path: &Path, text: &str) -> Format {
        let mut fields = Vec::new();
        let mut id = None;
        let mut print_fmt = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("ID:") {
                id = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("field:") {
                if let Some(field) = parse_field(rest) {
                    fields.push(field);
                }
            }
        }
        Format {
            path: path.to_owned(),
            id,
            fields,
            print_fmt,
        }
    }

    /// The named field, checked to be `size` bytes.
    pub fn field(&self, name: &str, size: u32) -> Result<&Field, TracefsError> {
        let field =
            self.fields
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| TracefsError::Field {
                    path: self.path.clone(),
                    field: name.to_owned(),
                    problem: "is missing".to_owned(),
                })?;
        if field.size != size {
            return Err(TracefsError::Field {
                path: self.path.clone(),
                field: name.to_owned(),
                problem: format!("is {} bytes, expected {size}", field.size),
            });
        }
        Ok(field)
    }

    /// The `(value, name)` pairs of `__print_symbolic(REC-><field>, ...)` in `print fmt`:
    /// for `skb:kfree_skb` these are the drop reasons, named as in `enum skb_drop_reason`
    /// without the `SKB_DROP_REASON_` prefix.
    pub fn symbolic(&self, field: &str) -> Vec<(i64, String)> {
        let needle = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = &self.print_fmt[start + needle.len()..];
        // Entries look like `{ 2, "NOT_SPECIFIED" }`; the list ends at the closing `)`.
        loop {
            let rest_trim = rest.trim_start();
            if !rest_trim.starts_with('{') {
                break;
            }
            let Some(close) = rest_trim.find('}') else {
                break;
            };
            let entry = &rest_trim[1..close];
            if let Some((value, name)) = entry.split_once(',') {
                let name = name.trim().trim_matches('"');
                if let Some(value) = parse_int(value.trim()) {
                    out.push((value, name.to_owned()));
                }
            }
            rest = rest_trim[close + 1..].trim_start();
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None => break,
            }
        }
        out
    }
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Parses `TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;` (after `field:`).
fn parse_field(rest: &str) -> Option<Field> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next()?.to_owned();
    let mut offset = None;
    let mut size = None;
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        }
    }
    // The name is the last identifier of the declaration, before any `[N]`.
    let last = decl.rsplit([' ', '*']).next()?;
    let name = last.split('[').next()?.to_owned();
    Some(Field {
        name,
        decl,
        offset: offset?,
        size: size?,
    })
}

/// The tracefs mount to use: the first of [`TRACEFS_MOUNTS`] that has `events/`; if none
/// has, mounts tracefs at `/sys/kernel/tracing` (as root), which many minimal VMs need.
pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    for mount in TRACEFS_MOUNTS {
        let path = Path::new(mount);
        if path.join("events").is_dir() {
            return Ok(path.to_owned());
        }
    }
    let target = Path::new(TRACEFS_MOUNTS[0]);
    mount_tracefs(target).map_err(|source| TracefsError::NotMounted { source })?;
    tracing::info!(path = %target.display(), "mounted tracefs");
    Ok(target.to_owned())
}

fn mount_tracefs(target: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let target = CString::new(target.as_os_str().as_bytes())?;
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `events/<category>/<name>/format` under the tracefs mount.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TracefsError::NoTracepoint {
                category: category.to_owned(),
                name: name.to_owned(),
                tracefs: tracefs.to_owned(),
            });
        }
        Err(source) => return Err(TracefsError::Read { path, source }),
    };
    Ok(Format::parse(&path, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB_6_18: &str = r#"name: kfree_skb
ID: 2310
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:void * rx_sk;	offset:24;	size:8;	signed:0;
	field:unsigned short protocol;	offset:32;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:36;	size:4;	signed:0;

print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 0x80, "MAX" })
"#;

    /// A 5.15-style record: no rx_sk, other offsets, reasons numbered differently.
    const KFREE_SKB_5_17: &str = r#"name: kfree_skb
ID: 1475
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:unsigned short protocol;	offset:24;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:28;	size:4;	signed:0;

print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, "NOT_SPECIFIED" }, { 2, "NO_SOCKET" }, { 7, "NETFILTER_DROP" }, { 15, "MAX" })
"#;

    #[test]
    fn parses_fields_and_reasons() {
        let f = Format::parse(Path::new("x"), KFREE_SKB_6_18);
        assert_eq!(f.id, Some(2310));
        assert_eq!(f.field("skbaddr", 8).unwrap().offset, 8);
        assert_eq!(f.field("location", 8).unwrap().offset, 16);
        assert_eq!(f.field("protocol", 2).unwrap().offset, 32);
        assert_eq!(f.field("reason", 4).unwrap().offset, 36);
        assert!(f.field("reason", 8).is_err());
        assert!(f.field("nope", 8).is_err());
        assert_eq!(
            f.symbolic("reason"),
            vec![
                (2, "NOT_SPECIFIED".to_owned()),
                (3, "NO_SOCKET".to_owned()),
                (12, "NETFILTER_DROP".to_owned()),
                (128, "MAX".to_owned()),
            ]
        );
        let old = Format::parse(Path::new("x"), KFREE_SKB_5_17);
        assert_eq!(old.field("reason", 4).unwrap().offset, 28);
        assert_eq!(old.symbolic("reason")[2], (7, "NETFILTER_DROP".to_owned()));
        assert!(old.symbolic("protocol").is_empty());
    }

    #[test]
    fn parses_array_fields() {
        let f = parse_field("char name[16];\toffset:8;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.offset, f.size), ("name", 8, 16));
    }
}
