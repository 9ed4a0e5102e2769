//! CEL expressions (`when`), compiled at validation and evaluated over JSON data.

use std::fmt;
use std::sync::Arc;

/// A compiled CEL expression and its source text.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`; the error is CEL's own message.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        Ok(Expr {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean with each `(name, value)` bound as a variable.
    pub fn eval_bool(&self, vars: &[(&str, &serde_json::Value)]) -> Result<bool, String> {
        match self.eval(vars)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {:?}, not true or false",
                self.source, other
            )),
        }
    }

    /// Evaluates with each `(name, value)` bound as a variable.
    pub fn eval(&self, vars: &[(&str, &serde_json::Value)]) -> Result<cel::Value, String> {
        let mut ctx = cel::Context::default();
        for (name, value) in vars {
            let value = cel::to_value(value).map_err(|e| e.to_string())?;
            ctx.add_variable_from_value(*name, value);
        }
        self.program
            .execute(&ctx)
            .map_err(|e| format!("`{}`: {e}", self.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_steps_are_visible() {
        let expr = Expr::compile("params.to == '1.16' && steps['pre-a'].state == 'succeeded'")
            .expect("compiles");
        let params = serde_json::json!({"to": "1.16"});
        let steps = serde_json::json!({"pre-a": {"state": "succeeded"}});
        assert_eq!(
            expr.eval_bool(&[("params", &params), ("steps", &steps)]),
            Ok(true)
        );
        let steps = serde_json::json!({"pre-a": {"state": "failed"}});
        assert_eq!(
            expr.eval_bool(&[("params", &params), ("steps", &steps)]),
            Ok(false)
        );
    }

    #[test]
    fn bad_syntax_is_an_error() {
        assert!(Expr::compile("params.to ==").is_err());
    }

    #[test]
    fn a_non_boolean_is_an_error() {
        let expr = Expr::compile("1 + 1").expect("compiles");
        assert!(expr.eval_bool(&[]).is_err());
    }
}
