//! Typed reading of YAML values, with messages in the user's words: what a
//! value is ("the number 1", "a list") and what it must be instead.

use serde_yaml::{Mapping, Value};

/// What a value is, as a person would say it.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "empty".to_owned(),
        Value::Bool(b) => format!("`{b}` (true or false)"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text `{}`", short(s)),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged `{}`", t.tag),
    }
}

/// `text` cut to a length that fits in a message, on a char boundary.
pub(super) fn short(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The value of `key`, or `None` when it is absent or written empty.
pub(super) fn get<'m>(map: &'m Mapping, key: &str) -> Option<&'m Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// Why a value is not what a field takes.
pub(super) fn wrong(v: &Value, want: &str) -> String {
    format!("this is {}, but it must be {want}", describe(v))
}

/// A text value.
pub(super) fn string(v: &Value, want: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(wrong(other, want)),
    }
}

/// `annotations`: a mapping of text to text, kept for whoever reads the
/// run (the report builder keeps a check's title and category there).
pub(super) fn annotations(v: &Value) -> Result<std::collections::BTreeMap<String, String>, String> {
    let want = "a mapping of names to texts, like `annotations: {title: Nodes are Ready}`";
    let Value::Mapping(map) = v else {
        return Err(wrong(v, want));
    };
    map.iter()
        .map(|(k, v)| match (k, v) {
            (Value::String(k), Value::String(v)) => Ok((k.clone(), v.clone())),
            (Value::String(k), other) => Err(format!(
                "annotation `{k}` is {}; quote it: annotations are texts",
                describe(other)
            )),
            (other, _) => Err(format!("a key is {}; {want}", describe(other))),
        })
        .collect()
}

/// A whole number of at least `min`.
pub(super) fn count(v: &Value, min: u64, want: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) if n >= min => Ok(n),
            _ => Err(format!("{n} is not {want}")),
        },
        other => Err(wrong(other, want)),
    }
}

/// `true` or `false`.
pub(super) fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong(other, "true or false")),
    }
}

/// The keys of `map` that are not text, or not in `known`: each with what to
/// say about it.
pub(super) fn unknown_keys(map: &Mapping, known: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in map.keys() {
        match key.as_str() {
            Some(k) if known.contains(&k) => {}
            Some(k) => {
                let hint = crate::suggest::nearest(k, known.iter().copied())
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                out.push((
                    k.to_owned(),
                    format!(
                        "unknown field{hint}; remove it or fix its spelling (the fields here are {})",
                        known.join(", ")
                    ),
                ));
            }
            None => out.push((
                String::new(),
                format!(
                    "a key is {}, not a field name; the fields here are {}",
                    describe(key),
                    known.join(", ")
                ),
            )),
        }
    }
    out
}
