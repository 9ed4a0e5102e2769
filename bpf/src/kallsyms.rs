//! Kernel addresses to `function+0xoffset` names, from `/proc/kallsyms`.

use std::path::Path;

/// Where the kernel lists its symbols.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// A sorted table of kernel text symbols.
#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    /// (address, name, module) sorted by address.
    syms: Vec<(u64, String, Option<String>)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`. Addresses are all zero unless the reader may see them
    /// (root, or `kernel.kptr_restrict=0`); then [`Kallsyms::is_empty`] is true and
    /// addresses are shown in hex.
    pub fn load() -> std::io::Result<Kallsyms> {
        Self::load_from(Path::new(KALLSYMS))
    }

    /// Reads a kallsyms-format file.
    pub fn load_from(path: &Path) -> std::io::Result<Kallsyms> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Parses kallsyms text: `ADDR TYPE NAME [MODULE]` per line; keeps text symbols.
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms = Vec::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            // `__pfx_*` are the padding before each function (CONFIG_CALL_PADDING): never a
            // caller. A return address right after a noreturn call lands on one; it belongs
            // to the function before.
            if !matches!(kind, "t" | "T" | "w" | "W") || name.starts_with("__pfx_") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let module = parts
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned());
            syms.push((addr, name.to_owned(), module));
        }
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms }
    }

    /// Whether no symbol addresses are visible.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The symbol containing `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64, Option<&str>)> {
        let idx = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, name, module) = &self.syms[idx];
        Some((name, addr - start, module.as_deref()))
    }

    /// `function+0xoff`, `function+0xoff [module]`, or `0x<addr>` when unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        match self.lookup(addr) {
            Some((name, off, None)) => format!("{name}+{off:#x}"),
            Some((name, off, Some(module))) => format!("{name}+{off:#x} [{module}]"),
            None => format!("{addr:#x}"),
        }
    }

    /// Just the function name of `addr`, if known.
    pub fn function(&self, addr: u64) -> Option<&str> {
        self.lookup(addr).map(|(name, _, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n\
             ffffffff81a00000 t nf_hook_slow\n\
             ffffffff81a00100 D some_data\n\
             ffffffff81a00200 T __pfx_next_fn\n\
             ffffffff81a00210 T next_fn\n\
             ffffffffc0000000 t nft_do_chain\t[nf_tables]\n\
             0000000000000000 T hidden\n\
             garbage\n",
        );
        assert_eq!(k.symbolize(0xffffffff81a0009c), "nf_hook_slow+0x9c");
        // Data symbols are skipped: this is still inside nf_hook_slow.
        assert_eq!(k.symbolize(0xffffffff81a00104), "nf_hook_slow+0x104");
        assert_eq!(
            k.symbolize(0xffffffffc0000010),
            "nft_do_chain+0x10 [nf_tables]"
        );
        assert_eq!(k.function(0xffffffffc0000010), Some("nft_do_chain"));
        assert_eq!(k.symbolize(0x10), "0x10");
        assert!(Kallsyms::parse("0000000000000000 T x\n").is_empty());
    }
}
