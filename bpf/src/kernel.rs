//! What the tracer reads from the running kernel before loading: the tracepoint record
//! layout (tracefs), the struct offsets (BTF), the drop reason names (BTF or tracefs).

use std::path::PathBuf;

use kpilot_bpf_common::{LAYOUT_HAS_SK, ProgramConfig};
use serde::{Deserialize, Serialize};

use crate::btf::{Btf, BtfError};
use crate::error::{Result, TraceError};
use crate::reasons::{DropReasons, ReasonSource};
use crate::tracefs::{self, Format};

/// The running kernel, as a report describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub machine: String,
    /// Where the drop reason names came from.
    pub reasons_source: ReasonSource,
    /// How many drop reasons this kernel names.
    pub reasons: usize,
    /// The tracefs mount used.
    pub tracefs: PathBuf,
}

/// Everything read from the kernel that the program and the decoder need.
#[derive(Debug)]
pub struct KernelProbe {
    /// Description for reports.
    pub info: KernelInfo,
    /// Reason names.
    pub reasons: DropReasons,
    /// Offsets for the program (filters not yet set).
    pub layout: ProgramConfig,
}

/// `uname -r` and `uname -m`.
pub fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.machine))
}

impl KernelProbe {
    /// Reads tracefs and `/sys/kernel/btf/vmlinux`.
    pub fn read() -> Result<KernelProbe> {
        let root = tracefs::tracefs_root()?;
        let format = tracefs::read_format(&root, "skb", "kfree_skb")?;
        let btf = Btf::from_kernel()?;
        Self::from_parts(root, &format, &btf)
    }

    /// Builds the probe from an already read format file and BTF.
    pub fn from_parts(tracefs: PathBuf, format: &Format, btf: &Btf) -> Result<KernelProbe> {
        let (release, machine) = uname();
        if !format.fields.iter().any(|f| f.name == "reason") {
            return Err(TraceError::NoDropReasons { release });
        }
        let reasons = DropReasons::from_kernel(Some(btf), format).ok_or_else(|| {
            TraceError::NoDropReasons {
                release: release.clone(),
            }
        })?;
        let layout = layout(format, btf)?;
        Ok(KernelProbe {
            info: KernelInfo {
                release,
                machine,
                reasons_source: reasons.source(),
                reasons: reasons.len(),
                tracefs,
            },
            reasons,
            layout,
        })
    }
}

/// The offsets the program reads at, from the tracepoint format and BTF.
pub fn layout(format: &Format, btf: &Btf) -> Result<ProgramConfig> {
    let ptr = 8;
    let mut cfg = ProgramConfig::zeroed();
    cfg.tp_skbaddr = format.field("skbaddr", ptr)?.offset;
    cfg.tp_location = format.field("location", ptr)?.offset;
    cfg.tp_protocol = format.field("protocol", 2)?.offset;
    cfg.tp_reason = format.field("reason", 4)?.offset;

    cfg.skb_head = btf.member_sized("sk_buff", "head", ptr)?.offset;
    cfg.skb_network_header = btf.member_sized("sk_buff", "network_header", 2)?.offset;
    cfg.skb_dev = btf.member_sized("sk_buff", "dev", ptr)?.offset;
    cfg.dev_ifindex = btf.member_sized("net_device", "ifindex", 4)?.offset;
    cfg.dev_net = btf.member_sized("net_device", "nd_net.net", ptr)?.offset;
    cfg.dev_name = btf.member_sized("net_device", "name", 16)?.offset;
    cfg.net_ns_inum = btf.member_sized("net", "ns.inum", 4)?.offset;

    // The socket is only a fallback for the namespace: tolerate its absence.
    let sk = (|| -> Result<(u32, u32), BtfError> {
        Ok((
            btf.member_sized("sk_buff", "sk", ptr)?.offset,
            btf.member_sized("sock", "__sk_common.skc_net.net", ptr)?
                .offset,
        ))
    })();
    match sk {
        Ok((skb_sk, sk_net)) => {
            cfg.skb_sk = skb_sk;
            cfg.sk_net = sk_net;
            cfg.layout_flags |= LAYOUT_HAS_SK;
        }
        Err(err) => tracing::debug!(%err, "no socket namespace fallback"),
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_layout() {
        use crate::prereq::{BTF, ROOT, needs};
        if !needs("running_kernel_layout", &[ROOT, BTF]) {
            return;
        }
        let probe = KernelProbe::read().expect("tracefs and the kernel's BTF are readable");
        let l = probe.layout;
        assert_eq!(l.tp_skbaddr, 8);
        assert!(l.skb_head > 0 && l.dev_net > 0 && l.net_ns_inum > 0);
        assert_ne!(l.layout_flags & LAYOUT_HAS_SK, 0);
        assert!(probe.reasons.value("NETFILTER_DROP").is_some());
        assert!(probe.info.reasons > 10);
    }
}
