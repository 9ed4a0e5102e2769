//! `{{params.NAME}}` templates in command arguments, and params as environment variables.

use std::collections::BTreeMap;

/// One piece of a templated argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text kept as written.
    Text(String),
    /// The value of a param.
    Param(String),
}

/// An argument with its `{{params.NAME}}` references resolved at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `text`, checking every reference against the declared `params`.
    pub fn parse(text: &str, params: &[String]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "`{text}` opens `{{{{` without closing it; write {{{{params.NAME}}}}"
                ));
            };
            let inner = after[..end].trim();
            let Some(name) = inner.strip_prefix("params.") else {
                return Err(format!("`{{{{{inner}}}}}` in `{text}` is not a param reference; write {{{{params.NAME}}}}"));
            };
            if !params.iter().any(|p| p == name) {
                return Err(format!(
                    "`{text}` uses param `{name}`, which spec.params does not declare (declared: {})",
                    if params.is_empty() { "none".to_owned() } else { params.join(", ") }
                ));
            }
            pieces.push(Piece::Param(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    /// The argument with each param replaced by its value, verbatim.
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Param(name) => out.push_str(values.get(name).map_or("", String::as_str)),
            }
        }
        out
    }
}

/// The environment variable a param is given as: `PARAM_` and its name in
/// upper case, `-` becoming `_`.
pub fn env_name(param: &str) -> String {
    kpilot_engine::plan::param_env_name(param)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_inside_and_whole() {
        let params = vec!["to".to_owned(), "from-version".to_owned()];
        let t = Template::parse("--to={{params.to}}-{{ params.from-version }}", &params)
            .expect("parses");
        let values = BTreeMap::from([
            ("to".to_owned(), "1.16".to_owned()),
            ("from-version".to_owned(), "$(x)".to_owned()),
        ]);
        assert_eq!(t.render(&values), "--to=1.16-$(x)");
    }

    #[test]
    fn unknown_param_is_named() {
        let err = Template::parse("{{params.nope}}", &["to".to_owned()]).expect_err("unknown");
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("target-version"), "PARAM_TARGET_VERSION");
    }
}
