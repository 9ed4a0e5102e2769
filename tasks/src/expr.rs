//! CEL for checks: kpilot's functions (versions, quantities, regex) and
//! message templates, compiled when a workflow is validated.
//!
//! Functions added to CEL's standard library:
//!
//! | function | gives |
//! |---|---|
//! | `v(s)` | a value that orders like the version `s` (see [`crate::version`]): `v(a) >= v(b)` |
//! | `versionCompare(a, b)` | -1, 0 or 1 |
//! | `versionAtLeast(a, b)` | `a >= b` as versions |
//! | `major(s)`, `minor(s)`, `patch(s)` | numeric part 0, 1, 2 of a version (0 when missing) |
//! | `versionPart(s, i)` | numeric part `i` of a version |
//! | `quantity(q)` | a Kubernetes quantity as a number (`quantity('1Gi') == 1073741824`) |
//! | `s.find(re)` | the first match of `re` in `s`, or `''` |
//! | `s.findAll(re)` | every match of `re` in `s` |
//!
//! CEL's own `s.matches(re)` tests a regex, and the `strings`, `lists` and
//! `math` extensions are on (`s.split(',')`, `list.join(', ')`,
//! `s.lowerAscii()`, `math.greatest(a, b)`, ...).

use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::extractors::This;
use cel::{Context, Env, FunctionContext, Program, Value};

use crate::quantity;
use crate::version::Version;

/// CEL's standard library with the strings, lists and math extensions.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    Arc::clone(ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // An extension that cannot be added leaves its functions undefined,
        // which validation then reports.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    }))
}

/// A check expression that failed to compile or to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not CEL.
    #[error("`{source_text}` is not a valid CEL expression: {message}")]
    Compile {
        /// The expression as written.
        source_text: String,
        /// CEL's parser message.
        message: String,
    },
    /// A `{{` in a template has no `}}`.
    #[error("`{0}` opens `{{{{` without closing it with `}}}}`")]
    Unclosed(String),
    /// Evaluation failed (a missing field, a type mismatch, a bad version).
    #[error("`{source_text}`: {message}")]
    Eval {
        /// The expression as written.
        source_text: String,
        /// What went wrong.
        message: String,
    },
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<Program>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let program = env().compile(source).map_err(|e| ExprError::Compile {
            source_text: source.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Expr {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Functions the expression calls that neither CEL's standard library
    /// nor kpilot defines: a typo that would otherwise surface only when
    /// the check runs.
    pub fn unknown_functions(&self) -> Vec<String> {
        let references = self.program.references();
        let mut unknown: Vec<String> = references
            .functions()
            .into_iter()
            .filter(|f| !known_function(f))
            .map(str::to_owned)
            .collect();
        unknown.sort();
        unknown
    }

    /// Whether the expression names the variable `name` (or a comprehension
    /// variable of that name).
    pub fn uses_variable(&self, name: &str) -> bool {
        self.program.references().has_variable(name)
    }

    /// Evaluates in `scope`.
    pub fn eval(&self, scope: &Scope) -> Result<Value, ExprError> {
        self.program
            .execute(&scope.context)
            .map_err(|e| ExprError::Eval {
                source_text: self.source.clone(),
                message: e.to_string(),
            })
    }

    /// Evaluates in `scope`, requiring a boolean.
    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, ExprError> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError::Eval {
                source_text: self.source.clone(),
                message: format!("gave {}, not true or false", display(&other)),
            }),
        }
    }
}

/// Variables and kpilot's functions, ready for evaluating expressions.
pub struct Scope {
    context: Context<'static, 'static>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Scope {
    /// CEL's standard library, kpilot's functions, no variables.
    pub fn new() -> Self {
        let mut context = Context::with_env(env());
        // The names are not in CEL's standard library, so adding cannot fail;
        // were one ever to clash, the function would just be missing and
        // calling it an evaluation error.
        let _ = context.add_function("v", version_key);
        let _ = context.add_function("versionCompare", version_compare);
        let _ = context.add_function("versionAtLeast", version_at_least);
        let _ = context.add_function("major", |f: &FunctionContext, s: Arc<String>| {
            version_part(f, &s, 0)
        });
        let _ = context.add_function("minor", |f: &FunctionContext, s: Arc<String>| {
            version_part(f, &s, 1)
        });
        let _ = context.add_function("patch", |f: &FunctionContext, s: Arc<String>| {
            version_part(f, &s, 2)
        });
        let _ = context.add_function(
            "versionPart",
            |f: &FunctionContext, s: Arc<String>, i: i64| {
                let i = usize::try_from(i).map_err(|_| f.error("a part index is 0 or more"))?;
                version_part(f, &s, i)
            },
        );
        let _ = context.add_function("quantity", quantity_value);
        let _ = context.add_function("find", find);
        let _ = context.add_function("findAll", find_all);
        Scope { context }
    }

    /// Binds `name` to a JSON value.
    pub fn set(&mut self, name: &str, value: &serde_json::Value) {
        self.context.add_variable_from_value(name, to_cel(value));
    }
}

/// JSON to CEL, integers as `int` (CEL's `uint` would not add to a literal:
/// `item.ready + 1` must work), others as `uint` or `double` by size.
pub fn to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(to_cel).collect()))
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<std::collections::HashMap<String, Value>>(),
        ),
    }
}

/// kpilot's functions, as [`Scope::new`] adds them.
const KPILOT_FUNCTIONS: [&str; 11] = [
    "v",
    "versionCompare",
    "versionAtLeast",
    "major",
    "minor",
    "patch",
    "versionPart",
    "quantity",
    "find",
    "findAll",
    "matches",
];

/// Whether `name` is an operator, a function of CEL's standard library or
/// one of kpilot's.
fn known_function(name: &str) -> bool {
    // Operators are named like `_+_`, `!_`, `@in`.
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) || KPILOT_FUNCTIONS.contains(&name) {
        return true;
    }
    // The standard library and the extensions declare their functions as
    // overloads, and a context refuses to add a function under an
    // overload's name. `math.greatest(..)` may be seen as `greatest`.
    let mut context = Context::with_env(env());
    ["", "math.", "lists.", "strings."].iter().any(|ns| {
        context
            .add_function(&format!("{ns}{name}"), || true)
            .is_err()
    })
}

fn parse_version(ftx: &FunctionContext, s: &str) -> Result<Version, cel::ExecutionError> {
    Version::parse(s).map_err(|e| ftx.error(e.to_string()))
}

fn version_key(ftx: &FunctionContext, s: Arc<String>) -> Result<Value, cel::ExecutionError> {
    Ok(Value::from(parse_version(ftx, &s)?.sort_key()))
}

fn version_compare(
    ftx: &FunctionContext,
    a: Arc<String>,
    b: Arc<String>,
) -> Result<i64, cel::ExecutionError> {
    let (a, b) = (parse_version(ftx, &a)?, parse_version(ftx, &b)?);
    Ok(a.cmp(&b) as i64)
}

fn version_at_least(
    ftx: &FunctionContext,
    a: Arc<String>,
    b: Arc<String>,
) -> Result<bool, cel::ExecutionError> {
    Ok(parse_version(ftx, &a)? >= parse_version(ftx, &b)?)
}

fn version_part(ftx: &FunctionContext, s: &str, i: usize) -> Result<i64, cel::ExecutionError> {
    let part = parse_version(ftx, s)?.part(i);
    i64::try_from(part).map_err(|_| ftx.error(format!("part {i} of `{s}` is too large")))
}

fn quantity_value(ftx: &FunctionContext, q: Value) -> Result<Value, cel::ExecutionError> {
    let n = match q {
        Value::String(s) => quantity::parse(&s).map_err(|e| ftx.error(e.to_string()))?,
        Value::Int(i) => return Ok(Value::Int(i)),
        Value::UInt(u) => return Ok(Value::UInt(u)),
        Value::Float(f) => f,
        other => {
            return Err(ftx.error(format!(
                "quantity() takes a string like '100Mi', not {}",
                display(&other)
            )))
        }
    };
    // Whole numbers stay integers, so that `quantity('1Gi') == 1073741824`.
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Ok(Value::Int(n as i64))
    } else {
        Ok(Value::Float(n))
    }
}

fn regex(ftx: &FunctionContext, re: &str) -> Result<regex::Regex, cel::ExecutionError> {
    regex::Regex::new(re).map_err(|e| ftx.error(format!("'{re}' is not a valid regex: {e}")))
}

fn find(
    ftx: &FunctionContext,
    This(s): This<Arc<String>>,
    re: Arc<String>,
) -> Result<Value, cel::ExecutionError> {
    let re = regex(ftx, &re)?;
    Ok(Value::from(
        re.find(&s).map_or(String::new(), |m| m.as_str().to_owned()),
    ))
}

fn find_all(
    ftx: &FunctionContext,
    This(s): This<Arc<String>>,
    re: Arc<String>,
) -> Result<Value, cel::ExecutionError> {
    let re = regex(ftx, &re)?;
    let all: Vec<Value> = re
        .find_iter(&s)
        .map(|m| Value::from(m.as_str().to_owned()))
        .collect();
    Ok(Value::from(all))
}

/// A value as a message shows it: strings bare, everything else as JSON.
pub fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Null => "null".to_owned(),
        other => match other.json() {
            Ok(json) => json.to_string(),
            Err(_) => format!("{other:?}"),
        },
    }
}

/// A message with `{{ CEL }}` holes, such as `{{item.name}} is {{item.kubeletVersion}}`.
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Expr(Expr),
}

impl MessageTemplate {
    /// Compiles every hole of `text`.
    pub fn compile(text: &str) -> Result<Self, ExprError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| ExprError::Unclosed(text.to_owned()))?;
            pieces.push(Piece::Expr(Expr::compile(after[..end].trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(MessageTemplate { pieces })
    }

    /// The expressions of its holes.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Expr(e) => Some(e),
            Piece::Text(_) => None,
        })
    }

    /// The message, each hole replaced by its value; a hole that fails to
    /// evaluate shows `<error: ...>`.
    pub fn render(&self, scope: &Scope) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(e) => match e.eval(scope) {
                    Ok(v) => out.push_str(&display(&v)),
                    Err(err) => out.push_str(&format!("<error: {err}>")),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(expr: &str) -> Result<bool, ExprError> {
        let mut scope = Scope::new();
        scope.set(
            "data",
            &json!({"gitVersion": "v1.16.3-aliyun.1", "mem": "100Mi"}),
        );
        Expr::compile(expr)?.eval_bool(&scope)
    }

    fn yes(expr: &str) {
        assert_eq!(eval(expr), Ok(true), "{expr}");
    }

    #[test]
    fn version_comparisons() {
        yes("v('v1.16.10') > v('v1.16.9')");
        yes("v('1.0.9.14') > v('1.0.9.9')");
        yes("v('1.0.9.14') < v('1.0.10')");
        yes("v(data.gitVersion) >= v('1.12.0')");
        yes("v(data.gitVersion) > v('v1.16.3')");
        yes("v(data.gitVersion) < v('v1.16.4')");
        yes("v('1.16') == v('v1.16.0')");
        yes("versionCompare('1.2.10', '1.2.9') == 1");
        yes("versionCompare('1.2', '1.2.0') == 0");
        yes("versionAtLeast('v1.16.3-aliyun.1', '1.16.3')");
        yes("!versionAtLeast('1.0.9.13', '1.0.9.14')");
        yes("major(data.gitVersion) == 1 && minor(data.gitVersion) == 16 && patch(data.gitVersion) == 3");
        yes("versionPart('1.0.9.14', 3) == 14");
        yes("minor('v1.34.4') - minor('v1.32.9') <= 2");
    }

    #[test]
    fn a_bad_version_is_an_error_not_false() {
        let err = eval("v('kwok-0.7.0') >= v('1.0')").expect_err("not a version");
        assert!(err.to_string().contains("kwok-0.7.0"), "{err}");
    }

    #[test]
    fn quantities() {
        yes("quantity('100Mi') == 104857600");
        yes("quantity(data.mem) > quantity('100M')");
        yes("quantity('250m') == 0.25");
        yes("quantity('1Gi') >= 1000000000");
        yes("quantity('1.5Gi') < quantity('2Gi')");
        assert!(eval("quantity('12 parsecs') > 1").is_err());
    }

    #[test]
    fn regexes() {
        yes("'registry.k8s.io/kube-proxy:v1.33.5'.find('v[0-9.]+$') == 'v1.33.5'");
        yes("'a1b22c333'.findAll('[0-9]+') == ['1', '22', '333']");
        yes("'nothing'.find('[0-9]+') == ''");
        yes("'kube-proxy'.matches('^kube-')");
        assert!(eval("'x'.find('(') == ''").is_err());
    }

    #[test]
    fn syntax_errors_are_found_at_compile() {
        assert!(matches!(
            Expr::compile("data.x >="),
            Err(ExprError::Compile { .. })
        ));
        assert!(MessageTemplate::compile("{{ item.name").is_err());
        assert!(MessageTemplate::compile("{{ item. }}").is_err());
    }

    #[test]
    fn unknown_functions_are_named() {
        let known = "size(data) > 0 && data.all(n, n.name.startsWith('a') && n.name.matches('^a') \
            && string(n.x) != '' && int('1') == 1 && double(1) > 0.5 && type(1) == int \
            && 'b' in ['b'] && v(n.v) >= v('1') && quantity(n.q) > 0 && n.s.find('x') == '' \
            && n.s.findAll('x') == [] && has(n.y) && data.exists(m, m.z) && data.map(m, m.z) == [] \
            && data.filter(m, m.z) == [] && n.s.contains('x') && n.s.endsWith('x') \
            && versionCompare('1', '2') == -1 && major('1') + minor('1') + patch('1') > 0 \
            && duration('1s') < duration('2s') && -1 < 0 && !false && [1][0] == 1 \
            && 'A,B'.lowerAscii().split(',').join('+') == 'a+b' && math.greatest(1, 2) == 2 \
            && lists.range(2) == [0, 1] && ' x '.trim() == 'x' && strings.quote('x') != '') \
            ? 1 : 2";
        let expr = Expr::compile(known).expect("compiles");
        assert_eq!(expr.unknown_functions(), Vec::<String>::new());
        let mut scope = Scope::new();
        scope.set(
            "data",
            &json!([{"name": "a", "v": "1.2", "q": "1Ki", "s": "x", "x": 1, "y": 1, "z": true}]),
        );
        // Every function is there at run time too (the value does not matter).
        assert!(expr.eval(&scope).is_ok(), "{:?}", expr.eval(&scope));
        let typo = Expr::compile("verison(data.gitVersion) >= v('1') && data.sise() > 0")
            .expect("compiles");
        assert_eq!(typo.unknown_functions(), vec!["sise", "verison"]);
        assert!(typo.uses_variable("data"));
        assert!(!typo.uses_variable("item"));
    }

    #[test]
    fn templates_fill_from_the_data() {
        let mut scope = Scope::new();
        scope.set(
            "item",
            &json!({"name": "n1", "kubeletVersion": "v1.31.0", "n": 3}),
        );
        let t =
            MessageTemplate::compile("{{item.name}} is {{ item.kubeletVersion }} ({{item.n + 1}})")
                .expect("compiles");
        assert_eq!(t.render(&scope), "n1 is v1.31.0 (4)");
        let t = MessageTemplate::compile("{{item.missing}}!").expect("compiles");
        assert!(t.render(&scope).starts_with("<error:"));
    }
}
