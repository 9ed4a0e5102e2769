//! kpilot's one CEL environment, for every expression a workflow holds: a step's `when`,
//! a check's `expect` and `message` templates, a trace's `expect`. The engine (which
//! evaluates `when`) and the task kinds (checks, traces, the node agent) both use it, so
//! an expression means the same wherever it is written.
//!
//! - JSON integers are CEL `int`s, so `steps.plan.output.n + 1` and `item.ready - 1` work.
//! - [`Expr::compile`] refuses, before CEL's parser sees it, text longer than
//!   [`MAX_LEN`] or deeper than [`MAX_DEPTH`] (see [`bounds`]), then any function that
//!   is not defined and any variable the place it is written does not bind: a typo is
//!   found when the workflow is validated, not when the step runs.
//!
//! Functions added to CEL's standard library:
//!
//! | function | gives |
//! |---|---|
//! | `v(s)` | a value that orders like the version `s` (see [`version`]): `v(a) >= v(b)` |
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

pub mod bounds;
mod functions;
pub mod quantity;
pub mod version;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, ExecutionError, Program, Value};

pub use bounds::{MAX_DEPTH, MAX_LEN, MAX_NESTING};

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

/// Names that are CEL's types, not variables (`type(x) == int`), and the namespaces of
/// the extensions' functions (`math.greatest`).
const BUILTIN_NAMES: [&str; 15] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional_type",
    "string",
    "type",
    "uint",
    "google",
    "math",
    "lists",
    "strings",
];

/// kpilot's functions, as messages list them.
const FUNCTION_LIST: &str =
    "v, versionCompare, versionAtLeast, major, minor, patch, versionPart, quantity, find, findAll";

/// JSON text of `s`, quoted: how messages show a value that is text.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// An expression that is refused, or that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Longer than [`MAX_LEN`].
    #[error(
        "too long: {0} bytes, and an expression may have at most {MAX_LEN} (16 KiB); split it \
         into several steps or checks, or compute the value in a step and test its output"
    )]
    TooLong(usize),
    /// Deeper than [`MAX_DEPTH`].
    #[error(
        "too deep: more than {MAX_NESTING} brackets inside one another, or more than \
         {MAX_DEPTH} levels of brackets and chained operators (such as `1 + 1 + …` or \
         `a.b.c…`); split it into several steps or checks, or compute the value in a step \
         and test its output"
    )]
    TooDeep,
    /// The text is not CEL.
    #[error("not a valid CEL expression: {0}")]
    Syntax(String),
    /// It calls a function that neither CEL nor kpilot defines.
    #[error(
        "calls `{0}()`, which is neither a CEL function nor one of kpilot's ({FUNCTION_LIST}); \
         see docs/checks.md"
    )]
    UnknownFunction(String),
    /// It reads a variable the place it is written does not bind.
    #[error("reads `{name}`, which is not defined here; it sees {known}")]
    UnknownVariable {
        /// The name read.
        name: String,
        /// What it may read, as a sentence (`params and steps`).
        known: String,
    },
    /// A hole of a template is refused.
    #[error("`{{{{ {hole} }}}}` {error}")]
    Hole {
        /// The hole's expression.
        hole: String,
        /// Why it is refused.
        error: Box<ExprError>,
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

impl ExprError {
    /// What went wrong, without the expression: for a message that names the expression
    /// once and then lists what each item gave.
    pub fn why(&self) -> String {
        match self {
            ExprError::Eval { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<Program>,
    variables: Arc<[String]>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// `a`, `a and b`, `a, b and c`.
fn sentence(names: &[&str]) -> String {
    match names {
        [] => "no variables".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

impl Expr {
    /// Compiles `source`, where the variables `vars` (and no others) are bound: checks
    /// its size and depth, parses it, and refuses unknown functions and variables.
    pub fn compile(source: &str, vars: &[&str]) -> Result<Self, ExprError> {
        bounds::prescan(source).map_err(|b| match b {
            bounds::Bound::Length(n) => ExprError::TooLong(n),
            bounds::Bound::Depth => ExprError::TooDeep,
        })?;
        let env = env();
        // The bounds are the defence; this only keeps a parser bug they miss from taking
        // kpilot (or an agent) down.
        let program = catch_unwind(AssertUnwindSafe(|| env.compile(source)))
            .map_err(|_| {
                ExprError::Syntax("CEL's parser failed on it; simplify the expression".into())
            })?
            .map_err(|e| ExprError::Syntax(e.to_string()))?;
        let shape = bounds::walk(program.expression());
        if shape.depth > bounds::MAX_TREE_DEPTH {
            return Err(ExprError::TooDeep);
        }
        if let Some(f) = shape
            .functions
            .iter()
            .find(|f| !functions::known_function(f))
        {
            return Err(ExprError::UnknownFunction(f.clone()));
        }
        if let Some(name) = shape
            .variables
            .iter()
            .find(|v| !vars.contains(&v.as_str()) && !BUILTIN_NAMES.contains(&v.as_str()))
        {
            return Err(ExprError::UnknownVariable {
                name: name.clone(),
                known: sentence(vars),
            });
        }
        Ok(Expr {
            source: source.to_owned(),
            program: Arc::new(program),
            variables: shape.variables.into_iter().collect(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads the variable `name`.
    pub fn uses_variable(&self, name: &str) -> bool {
        self.variables.iter().any(|v| v == name)
    }

    /// Evaluates in `scope`.
    pub fn eval(&self, scope: &Scope) -> Result<Value, ExprError> {
        self.program
            .execute(&scope.context)
            .map_err(|e| ExprError::Eval {
                source_text: self.source.clone(),
                message: explain(&e),
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

/// An evaluation error in a person's words where CEL's own would show Rust's forms.
fn explain(e: &ExecutionError) -> String {
    match e {
        ExecutionError::FunctionError { function, message } => {
            if functions::KPILOT_FUNCTIONS.contains(&function.as_str()) {
                message.clone()
            } else {
                format!("{function}(): {message}")
            }
        }
        ExecutionError::NoSuchKey(key) => format!("there is no field `{key}`"),
        ExecutionError::UndeclaredReference(name) => format!("`{name}` is not defined"),
        other => other.to_string(),
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
        functions::add(&mut context);
        Scope { context }
    }

    /// A scope with each `(name, value)` bound.
    pub fn with(vars: &[(&str, &serde_json::Value)]) -> Self {
        let mut scope = Scope::new();
        for (name, value) in vars {
            scope.set(name, value);
        }
        scope
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
    /// Compiles every hole of `text`, where the variables `vars` are bound.
    pub fn compile(text: &str, vars: &[&str]) -> Result<Self, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError::TooLong(text.len()));
        }
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
            let hole = after[..end].trim();
            let expr = Expr::compile(hole, vars).map_err(|e| ExprError::Hole {
                hole: hole.to_owned(),
                error: Box::new(e),
            })?;
            pieces.push(Piece::Expr(expr));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(MessageTemplate { pieces })
    }

    /// Whether a hole reads the variable `name`.
    pub fn uses_variable(&self, name: &str) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Expr(e) if e.uses_variable(name)))
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
        Expr::compile(expr, &["data"])?.eval_bool(&scope)
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
            Expr::compile("data.x >=", &["data"]),
            Err(ExprError::Syntax(_))
        ));
        assert!(MessageTemplate::compile("{{ item.name", &["item"]).is_err());
        assert!(MessageTemplate::compile("{{ item. }}", &["item"]).is_err());
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
        let expr = Expr::compile(known, &["data"]).expect("compiles");
        let mut scope = Scope::new();
        scope.set(
            "data",
            &json!([{"name": "a", "v": "1.2", "q": "1Ki", "s": "x", "x": 1, "y": 1, "z": true}]),
        );
        // Every function is there at run time too (the value does not matter).
        assert!(expr.eval(&scope).is_ok(), "{:?}", expr.eval(&scope));
        assert_eq!(
            Expr::compile("verison(data.gitVersion) >= v('1')", &["data"]).map(|_| ()),
            Err(ExprError::UnknownFunction("verison".into()))
        );
        assert_eq!(
            Expr::compile("size(data) > 0 && data.sise() > 0", &["data"]).map(|_| ()),
            Err(ExprError::UnknownFunction("sise".into()))
        );
        let expr =
            Expr::compile("data.all(n, n.x > 0) && item.y", &["data", "item"]).expect("compiles");
        assert!(expr.uses_variable("data") && expr.uses_variable("item"));
        assert!(!expr.uses_variable("n"), "bound by all()");
    }

    #[test]
    fn templates_fill_from_the_data() {
        let mut scope = Scope::new();
        scope.set(
            "item",
            &json!({"name": "n1", "kubeletVersion": "v1.31.0", "n": 3}),
        );
        let t = MessageTemplate::compile(
            "{{item.name}} is {{ item.kubeletVersion }} ({{item.n + 1}})",
            &["item"],
        )
        .expect("compiles");
        assert_eq!(t.render(&scope), "n1 is v1.31.0 (4)");
        let t = MessageTemplate::compile("{{item.missing}}!", &["item"]).expect("compiles");
        assert!(t.render(&scope).starts_with("<error:"));
    }

    /// The places expressions are written, and what each binds.
    const PLACES: [(&str, &[&str]); 4] = [
        ("when", &["params", "steps"]),
        ("check.expect", &["params", "data", "item"]),
        ("check.message", &["params", "data", "item"]),
        ("trace.expect", &["drops", "report"]),
    ];

    #[test]
    fn unknown_functions_and_variables_are_refused_everywhere() {
        for (place, vars) in PLACES {
            let var = vars[0];
            let typo = format!("verison({var}) == 1");
            let stray = format!("{var} == nope");
            if place == "check.message" {
                let t = MessageTemplate::compile(&format!("x {{{{ {typo} }}}}"), vars);
                let e = t.expect_err(place).to_string();
                assert!(e.contains("calls `verison()`"), "{place}: {e}");
                let t = MessageTemplate::compile(&format!("{{{{ {stray} }}}}"), vars);
                let e = t.expect_err(place).to_string();
                assert!(e.contains("reads `nope`"), "{place}: {e}");
                continue;
            }
            assert_eq!(
                Expr::compile(&typo, vars).map(|_| ()),
                Err(ExprError::UnknownFunction("verison".into())),
                "{place}"
            );
            let e = Expr::compile(&stray, vars).expect_err(place).to_string();
            assert!(
                e.contains("reads `nope`") && e.contains(var),
                "{place}: {e}"
            );
            // What the place binds, CEL's type names and comprehension variables are known.
            let fine = format!(
                "{} && type(1) == int && [1].all(x, x > 0)",
                vars.join(" != null && ")
            );
            assert!(Expr::compile(&fine, vars).is_ok(), "{place}: {fine}");
        }
    }

    #[test]
    fn json_integers_add_to_literals_in_when() {
        let when = Expr::compile(
            "steps.a.output.n + 1 == 4 && steps.a.output.n * 2 > params.min.size()",
            &["params", "steps"],
        )
        .expect("compiles");
        let scope = Scope::with(&[
            ("params", &json!({"min": "12"})),
            (
                "steps",
                &json!({"a": {"state": "succeeded", "output": {"n": 3}}}),
            ),
        ]);
        assert_eq!(when.eval_bool(&scope), Ok(true));
    }

    #[test]
    fn kpilot_functions_work_in_when() {
        let when = Expr::compile(
            "v(steps.probe.output.version) >= v(params.to) && quantity(steps.probe.output.mem) > 1000",
            &["params", "steps"],
        )
        .expect("compiles");
        let scope = Scope::with(&[
            ("params", &json!({"to": "1.31"})),
            (
                "steps",
                &json!({"probe": {"output": {"version": "v1.31.2-eks-1", "mem": "1Ki"}}}),
            ),
        ]);
        assert_eq!(when.eval_bool(&scope), Ok(true));
    }

    #[test]
    fn long_and_deep_expressions_are_refused_before_parsing() {
        let sum = |n: usize| vec!["1"; n].join(" + ");
        for (what, text) in [
            ("7,000 terms", sum(7000)),
            ("50,000 terms", sum(50_000)),
            (
                "70,000 parentheses",
                format!("{}1{}", "(".repeat(70_000), ")".repeat(70_000)),
            ),
            (
                "an error past column 65,535",
                format!("{} +", "x".repeat(70_000)),
            ),
        ] {
            let e = Expr::compile(&text, &[]).expect_err(what);
            assert!(
                matches!(e, ExprError::TooLong(_) | ExprError::TooDeep),
                "{what}: {e}"
            );
        }
        assert_eq!(
            Expr::compile(&sum(3000), &[]).map(|_| ()),
            Err(ExprError::TooDeep)
        );
        assert!(Expr::compile(&sum(MAX_DEPTH), &[]).is_ok());
        let t = MessageTemplate::compile(&format!("{{{{ {} }}}}", sum(3000)), &[]);
        assert!(t.expect_err("deep hole").to_string().contains("too deep"));
    }

    /// The deepest expressions the bounds let through, compiled and evaluated on a thread
    /// with a tokio worker's 2 MiB stack (the main thread has 8 MiB).
    #[test]
    fn the_deepest_accepted_expressions_fit_a_worker_thread() {
        let cases = deepest_accepted();
        let worker = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                for text in cases {
                    let expr = Expr::compile(&text, &["x"]).expect(&text);
                    let scope = Scope::with(&[("x", &json!({"a": [1], "b": {"c": 1}}))]);
                    let _ = expr.eval(&scope);
                }
            })
            .expect("spawn");
        worker.join().expect("no stack overflow");
    }

    fn deepest_accepted() -> Vec<String> {
        let (d, n) = (MAX_DEPTH, MAX_NESTING);
        let cases = vec![
            vec!["1"; d].join(" + "),
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!(
                "{}{}{}",
                "(".repeat(n),
                vec!["1"; d - n].join(" + "),
                ")".repeat(n)
            ),
            format!("{}true", "!".repeat(d)),
            format!("{}1", "-".repeat(d)),
            format!("x{}", ".b".repeat(d)),
            format!("x.a{}", "[0]".repeat(d - 2)),
            format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            format!("{}1{}", "size([".repeat(n / 2), "])".repeat(n / 2)),
            format!("{}true{}", "[1].all(y, ".repeat(n), ")".repeat(n)),
            format!("{}1", "true ? 0 : ".repeat(n)),
            format!("{{{}}}", vec!["'k': 1 + 2"; 1000].join(", ")),
        ];
        for text in &cases {
            assert!(bounds::prescan(text).is_ok(), "not accepted: {text}");
        }
        cases
    }
}
