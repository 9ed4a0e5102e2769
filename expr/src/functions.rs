//! kpilot's functions, added to CEL's standard library: versions, quantities, regexes.

use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, FunctionContext, Value};

use crate::quantity;
use crate::version::Version;
use crate::{display, env};

/// Adds kpilot's functions to `context`.
pub(crate) fn add(context: &mut Context<'static, 'static>) {
    // The names are not in CEL's standard library, so adding cannot fail;
    // were one ever to clash, validation would report the function unknown.
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
}

/// kpilot's functions, as [`add`] adds them (and CEL's `matches`, which it may
/// not list as an overload).
pub(crate) const KPILOT_FUNCTIONS: [&str; 11] = [
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
pub(crate) fn known_function(name: &str) -> bool {
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
