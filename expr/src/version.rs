//! Version numbers as clusters and addons write them: semver (`v1.16.10`),
//! any number of numeric parts (`1.0.9.14`) and vendor suffixes
//! (`v1.16.3-aliyun.1`), in one total order.
//!
//! The order, from the first rule that differs:
//!
//! 1. The numeric parts, compared as numbers; a missing part is 0, so
//!    `1.16` = `1.16.0` and `1.16.10` > `1.16.9` > `1.16`.
//! 2. The suffix after `-`: a pre-release (its first identifier starts with
//!    `alpha`, `beta`, `rc`, `pre` or `dev`) sorts *before* the bare version
//!    (`1.16.0-rc.1` < `1.16.0`); any other suffix is a vendor build of that
//!    version and sorts *after* it (`1.16.3` < `1.16.3-aliyun.1` < `1.16.4`).
//! 3. Two suffixes of the same kind compare like semver pre-releases:
//!    identifier by identifier, numbers numerically and below words.
//!
//! Build metadata after `+` is ignored (`1.16.3+k3s1` = `1.16.3`), and a
//! leading `v` is optional.

use std::cmp::Ordering;
use std::fmt;

/// Why a text is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a version: {}", crate::quoted(.text), .why)]
pub struct VersionError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// What follows the numeric parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SuffixKind {
    /// `-alpha.1`, `-rc.0`, ...: before the bare version.
    PreRelease,
    /// No suffix.
    None,
    /// `-aliyun.1`, `-eks-4f4795d`, `-gke.100`: after the bare version.
    Vendor,
}

/// One dot-separated identifier of a suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ident {
    /// Digits only: compared as a number, below every word.
    Number(u64),
    /// Anything else: compared as text.
    Word(String),
}

/// A parsed version; see the module docs for its order.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    /// The numeric parts as written (`1.0.9.14` has four).
    parts: Vec<u64>,
    kind: SuffixKind,
    suffix: Vec<Ident>,
}

const PRE_RELEASE: [&str; 5] = ["alpha", "beta", "rc", "pre", "dev"];

impl Version {
    /// Parses `text`: an optional `v`, one or more numeric parts separated by
    /// dots, then an optional `-suffix` and `+build`.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |why| VersionError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        let body = body.split_once('+').map_or(body, |(b, _)| b);
        let (core, suffix) = match body.split_once('-') {
            Some((c, s)) => (c, Some(s)),
            None => (body, None),
        };
        if core.is_empty() {
            return Err(err("it has no numeric part (write it like 1.16.3)"));
        }
        let mut parts = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    "its parts before any `-` must be numbers separated by dots",
                ));
            }
            parts.push(part.parse().map_err(|_| err("a part is too large"))?);
        }
        let (kind, suffix) = match suffix {
            None => (SuffixKind::None, Vec::new()),
            Some("") => return Err(err("it ends with `-`")),
            Some(s) => {
                let idents: Vec<Ident> = s
                    .split('.')
                    .map(|i| match i.parse::<u64>() {
                        Ok(n) if i.bytes().all(|b| b.is_ascii_digit()) => Ident::Number(n),
                        _ => Ident::Word(i.to_ascii_lowercase()),
                    })
                    .collect();
                let pre = match idents.first() {
                    Some(Ident::Word(w)) => PRE_RELEASE.iter().any(|p| w.starts_with(p)),
                    _ => false,
                };
                let kind = if pre {
                    SuffixKind::PreRelease
                } else {
                    SuffixKind::Vendor
                };
                (kind, idents)
            }
        };
        Ok(Version {
            text: text.to_owned(),
            parts,
            kind,
            suffix,
        })
    }

    /// Numeric part `i` (0 = major), 0 when the version has fewer parts.
    pub fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    /// The numeric parts without trailing zeros: what the order compares.
    fn significant(&self) -> &[u64] {
        let end = self
            .parts
            .iter()
            .rposition(|p| *p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..end]
    }

    /// A string whose byte order is this version's order, so that CEL can
    /// compare two of them with `<`, `==`, `>=`.
    ///
    /// Each numeric part is written as `.` and 20 digits; then `!` (a
    /// pre-release), `#` (no suffix) or `+` (a vendor build), all of which sort
    /// below `.`; then each suffix identifier after a `\u{1}`, numbers as `0`
    /// and 20 digits, words as `1` and the word.
    pub fn sort_key(&self) -> String {
        let mut key = String::new();
        for p in self.significant() {
            key.push_str(&format!(".{p:020}"));
        }
        key.push(match self.kind {
            SuffixKind::PreRelease => '!',
            SuffixKind::None => '#',
            SuffixKind::Vendor => '+',
        });
        for ident in &self.suffix {
            key.push('\u{1}');
            match ident {
                Ident::Number(n) => key.push_str(&format!("0{n:020}")),
                Ident::Word(w) => {
                    key.push('1');
                    key.push_str(w);
                }
            }
        }
        key
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then(self.kind.cmp(&other.kind))
            .then_with(|| self.suffix.cmp(&other.suffix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Checks `Ord` and the sort key agree on `a < b`.
    fn less(a: &str, b: &str) {
        assert!(v(a) < v(b), "{a} < {b}");
        assert!(v(a).sort_key() < v(b).sort_key(), "key of {a} < key of {b}");
        assert!(v(b) > v(a), "{b} > {a}");
    }

    fn same(a: &str, b: &str) {
        assert_eq!(v(a), v(b), "{a} = {b}");
        assert_eq!(v(a).sort_key(), v(b).sort_key(), "key of {a} = key of {b}");
    }

    #[test]
    fn numeric_parts_compare_as_numbers() {
        less("v1.16.9", "v1.16.10");
        less("1.9", "1.10");
        less("1.16", "1.16.1");
        same("1.16", "v1.16.0");
        same("V1.16.0.0", "1.16");
    }

    #[test]
    fn four_part_addon_versions() {
        less("1.0.9.13", "1.0.9.14");
        less("1.0.9", "1.0.9.14");
        less("1.0.9.14", "1.0.10");
        assert_eq!(v("1.0.9.14").part(3), 14);
        assert_eq!(v("1.0.9").part(3), 0);
    }

    #[test]
    fn vendor_builds_sort_after_their_version() {
        less("v1.16.3", "v1.16.3-aliyun.1");
        less("v1.16.3-aliyun.1", "v1.16.3-aliyun.2");
        less("v1.16.3-aliyun.9", "v1.16.3-aliyun.10");
        less("v1.16.3-aliyun.1", "v1.16.4");
        less("v1.16.3-aliyun.1", "v1.16.3.1");
        assert_eq!(v("v1.16.3-aliyun.1").part(1), 16);
    }

    #[test]
    fn pre_releases_sort_before_their_version() {
        less("1.16.0-alpha.1", "1.16.0-beta.0");
        less("1.16.0-rc.1", "1.16.0");
        less("1.15.9", "1.16.0-rc.1");
        less("1.16.0-rc.1", "1.16.0-rc.1.1");
        less("1.16.0-rc.2", "1.16.0-rc.10");
    }

    #[test]
    fn build_metadata_is_ignored() {
        same("v1.16.3+k3s1", "1.16.3");
    }

    #[test]
    fn not_versions() {
        for bad in [
            "",
            "v",
            "kwok-0.7.0",
            "1..2",
            "1.x",
            "latest",
            "1.2-",
            "-rc1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
