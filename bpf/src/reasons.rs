//! Drop reason names, as the running kernel numbers them.
//!
//! `enum skb_drop_reason` grows with every kernel release and its values shift (reason 7 was
//! NETFILTER_DROP in 5.17 and is UNIX_DISCONNECT in 6.18), so the table is read from the
//! kernel at load time: from BTF (`enum skb_drop_reason`), or else from the `print fmt` of the
//! tracepoint's format file. Nothing is compiled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::btf::Btf;
use crate::tracefs::Format;

const PREFIX: &str = "SKB_DROP_REASON_";
/// Subsystem drop reasons (mac80211, openvswitch, ...) carry the subsystem in the high bits.
const SUBSYS_SHIFT: u32 = 16;

/// Where the reason names came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonSource {
    /// `enum skb_drop_reason` in `/sys/kernel/btf/vmlinux`.
    Btf,
    /// `__print_symbolic` in the tracepoint's `print fmt`.
    Tracefs,
}

/// The running kernel's drop reasons: value ↔ name (names without `SKB_DROP_REASON_`).
#[derive(Debug, Clone)]
pub struct DropReasons {
    by_value: BTreeMap<u32, String>,
    subsystems: BTreeMap<u32, String>,
    source: ReasonSource,
}

impl DropReasons {
    /// Reads the names from BTF when it has `enum skb_drop_reason`, else from `format`.
    /// Returns `None` when neither has them (kernels before 5.17 have no drop reasons).
    pub fn from_kernel(btf: Option<&Btf>, format: &Format) -> Option<DropReasons> {
        btf.and_then(Self::from_btf)
            .or_else(|| Self::from_format(format))
    }

    /// From `enum skb_drop_reason` (and `enum skb_drop_reason_subsys`) in BTF.
    pub fn from_btf(btf: &Btf) -> Option<DropReasons> {
        let values = btf.enum_values("skb_drop_reason")?;
        let mut by_value = BTreeMap::new();
        for (name, value) in values {
            let Ok(value) = u32::try_from(value) else {
                continue;
            };
            let name = name.strip_prefix(PREFIX).unwrap_or(&name).to_owned();
            by_value.entry(value).or_insert(name);
        }
        let mut subsystems = BTreeMap::new();
        for (name, value) in btf
            .enum_values("skb_drop_reason_subsys")
            .unwrap_or_default()
        {
            if let (Ok(value), Some(short)) = (
                u32::try_from(value),
                name.strip_prefix("SKB_DROP_REASON_SUBSYS_"),
            ) {
                subsystems.entry(value).or_insert_with(|| short.to_owned());
            }
        }
        Some(DropReasons {
            by_value,
            subsystems,
            source: ReasonSource::Btf,
        })
    }

    /// From the `__print_symbolic(REC->reason, ...)` list in the tracepoint's `print fmt`.
    pub fn from_format(format: &Format) -> Option<DropReasons> {
        let pairs = format.symbolic("reason");
        if pairs.is_empty() {
            return None;
        }
        let by_value = pairs
            .into_iter()
            .filter_map(|(v, n)| Some((u32::try_from(v).ok()?, n)))
            .collect();
        Some(DropReasons {
            by_value,
            subsystems: BTreeMap::new(),
            source: ReasonSource::Tracefs,
        })
    }

    /// Where the names came from.
    pub fn source(&self) -> ReasonSource {
        self.source
    }

    /// How many reasons this kernel names.
    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    /// The name of a reason value, e.g. `NETFILTER_DROP`. A value the table lacks is shown
    /// as `UNKNOWN(<value>)`, or `<SUBSYS>:<code>` for a subsystem's reason.
    pub fn name(&self, value: u32) -> String {
        if let Some(name) = self.by_value.get(&value) {
            return name.clone();
        }
        let subsys = value >> SUBSYS_SHIFT;
        if subsys != 0 {
            let code = value & ((1 << SUBSYS_SHIFT) - 1);
            return match self.subsystems.get(&subsys) {
                Some(name) => format!("{name}:{code}"),
                None => format!("SUBSYS_{subsys}:{code}"),
            };
        }
        format!("UNKNOWN({value})")
    }

    /// The value of a reason name; accepts `NETFILTER_DROP`, `netfilter_drop` or
    /// `SKB_DROP_REASON_NETFILTER_DROP`.
    pub fn value(&self, name: &str) -> Option<u32> {
        let upper = name.trim().to_ascii_uppercase();
        let short = upper.strip_prefix(PREFIX).unwrap_or(&upper);
        self.by_value
            .iter()
            .find(|(_, n)| n.as_str() == short)
            .map(|(v, _)| *v)
    }

    /// All `(value, name)` pairs, by value.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_value.iter().map(|(v, n)| (*v, n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn names_and_values_from_format() {
        let fmt = Format::parse(
            Path::new("f"),
            "print fmt: \"r %s\", __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 12, \"NETFILTER_DROP\" })",
        );
        let r = DropReasons::from_format(&fmt).unwrap();
        assert_eq!(r.source(), ReasonSource::Tracefs);
        assert_eq!(r.len(), 2);
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.name(99), "UNKNOWN(99)");
        assert_eq!(r.name(0x0003_0005), "SUBSYS_3:5");
        assert_eq!(r.value("netfilter_drop"), Some(12));
        assert_eq!(r.value("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(r.value("nope"), None);
        assert!(DropReasons::from_format(&Format::parse(Path::new("f"), "")).is_none());
    }

    /// BTF and tracefs must agree on the running kernel.
    #[test]
    fn btf_and_tracefs_agree_on_running_kernel() {
        use crate::prereq::{BTF, ROOT, needs};
        if !needs("btf_and_tracefs_agree_on_running_kernel", &[ROOT, BTF]) {
            return;
        }
        let btf = Btf::from_kernel().expect("the kernel's BTF is readable");
        let root = crate::tracefs::tracefs_root().expect("tracefs is mounted");
        let fmt = crate::tracefs::read_format(&root, "skb", "kfree_skb")
            .expect("skb:kfree_skb exists (the tracer needs it)");
        // The tracer needs Linux 5.17 or later, which has drop reasons.
        let a = DropReasons::from_btf(&btf).expect("the kernel's BTF has drop reasons");
        let b = DropReasons::from_format(&fmt).expect("kfree_skb's format has drop reasons");
        for (value, name) in b.iter() {
            assert_eq!(a.name(value), name, "reason {value}");
        }
    }
}
