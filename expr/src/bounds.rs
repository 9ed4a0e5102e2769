//! Size and depth bounds, checked before the text reaches CEL's parser.
//!
//! CEL's parser, the tree it builds and the evaluator all recurse once per level of the
//! expression, and the parser panics when it reports an error past column 65,535. A
//! workflow (or a request to an agent) could otherwise crash kpilot with a long chain
//! such as `1 + 1 + … + 1`, deep parentheses or one very long line. So [`prescan`] looks
//! at the text with a loop, no recursion, and refuses what is too long or too deep; then,
//! once parsed, [`walk`] measures the tree itself (also with a loop) and learns what it
//! calls and which variables it reads.

use std::collections::BTreeSet;
use std::rc::Rc;

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr};

/// The longest expression, in bytes. Real `when`s and checks are a few hundred bytes;
/// this keeps every column far below the 65,535 where CEL's parser panics.
pub const MAX_LEN: usize = 16 * 1024;

/// The most brackets (`(`, `[`, `{`) open at once, with the `? :` around them, which
/// CEL's parser nests the same way.
///
/// Measured with cel 0.15 in a release build (and in a debug build, where the workspace
/// optimises `cel` and `antlr4rust`): parsing and evaluating 95 nested brackets fits in
/// 1 MiB of stack, not in 512 KiB, and 50 fit in 512 KiB; so 50 keeps a margin of four on
/// the 2 MiB of a tokio worker thread, and more on kpilot's 8 MiB main thread. (CEL's
/// parser itself refuses more than 96.)
pub const MAX_NESTING: usize = 50;

/// The deepest expression: open brackets plus the operators chained at each level,
/// which CEL's tree nests one inside the other (`a + b + c` is two levels, `a.b.c` two,
/// `a[0][1]` two, `!!x` two). A list's elements, a call's arguments and the clauses of
/// `&&` and `||` (which CEL balances) each start afresh.
///
/// Measured as above: a chain of about 1,400 `+` parses and evaluates on a 2 MiB thread,
/// so 100 leaves a margin of ten with brackets at their limit too.
pub const MAX_DEPTH: usize = 100;

/// The deepest tree [`walk`] lets through: what [`MAX_DEPTH`] admits, with the few
/// nodes a macro such as `all` adds per level, and still a margin of five below the
/// 1,400 levels measured.
pub const MAX_TREE_DEPTH: usize = 3 * MAX_DEPTH;

/// Why an expression is refused before it is parsed (or right after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// More than [`MAX_LEN`] bytes.
    Length(usize),
    /// Deeper than [`MAX_DEPTH`] or [`MAX_NESTING`].
    Depth,
}

/// Checks `text` against [`MAX_LEN`], [`MAX_NESTING`] and, approximately (it counts
/// every operator of a chain, whatever their precedence), [`MAX_DEPTH`].
pub fn prescan(text: &str) -> Result<(), Bound> {
    if text.len() > MAX_LEN {
        return Err(Bound::Length(text.len()));
    }
    let mut scan = Scan {
        chains: vec![Chain::default()],
        sum: 0,
        ternaries: 0,
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    // Whether the last token ends an operand, so that a `[` after it indexes it.
    let mut after_operand = false;
    while i < bytes.len() {
        let b = bytes[i];
        let mut operand = false;
        match b {
            b'\'' | b'"' => {
                i = skip_string(bytes, i, raw_prefix(bytes, i));
                after_operand = true;
                continue;
            }
            b'(' | b'[' | b'{' => {
                if b == b'[' && after_operand {
                    scan.add()?;
                }
                scan.open()?;
            }
            b')' | b']' | b'}' => {
                scan.close();
                operand = true;
            }
            // Siblings: list elements, arguments, map entries, the arms of `? :`.
            b',' | b':' => scan.reset(),
            b'&' | b'|' if bytes.get(i + 1) == Some(&b) => {
                scan.reset();
                i += 2;
                after_operand = false;
                continue;
            }
            b'?' => scan.ternary()?,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'!' | b'<' | b'>' | b'=' | b'.' => {
                scan.add()?;
                // A two-character operator counts once.
                if matches!(b, b'=' | b'!' | b'<' | b'>') && bytes.get(i + 1) == Some(&b'=') {
                    i += 1;
                }
            }
            b'0'..=b'9' => {
                i = skip_number(bytes, i);
                after_operand = true;
                continue;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let word = &bytes[start..i];
                // A raw or bytes prefix belongs to the string right after it.
                let prefix = matches!(bytes.get(i), Some(b'\'' | b'"')) && word.len() <= 2;
                if word == b"in" {
                    scan.add()?;
                    after_operand = false;
                } else {
                    after_operand = !prefix;
                }
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        after_operand = operand;
        i += 1;
    }
    Ok(())
}

/// Open brackets, each with the operators chained in it so far: the depth at any point
/// is the number of open brackets plus every chain.
struct Scan {
    chains: Vec<Chain>,
    /// Every chain's operators and ternaries.
    sum: usize,
    /// Every chain's ternaries: CEL's parser nests them like brackets.
    ternaries: usize,
}

/// The operators chained at one bracket level.
#[derive(Default)]
struct Chain {
    /// `? :` nest their arms, so they count until the bracket closes.
    ternaries: usize,
    /// Operators since the last `,`, `:`, `&&` or `||`.
    operators: usize,
}

impl Scan {
    fn check(&self) -> Result<(), Bound> {
        let open = self.chains.len() - 1;
        if open + self.sum > MAX_DEPTH || open + self.ternaries > MAX_NESTING {
            return Err(Bound::Depth);
        }
        Ok(())
    }

    fn add(&mut self) -> Result<(), Bound> {
        if let Some(top) = self.chains.last_mut() {
            top.operators += 1;
        }
        self.sum += 1;
        self.check()
    }

    fn ternary(&mut self) -> Result<(), Bound> {
        if let Some(top) = self.chains.last_mut() {
            top.ternaries += 1;
        }
        self.sum += 1;
        self.ternaries += 1;
        self.check()
    }

    fn open(&mut self) -> Result<(), Bound> {
        self.chains.push(Chain::default());
        self.check()
    }

    fn close(&mut self) {
        // An unbalanced bracket is the parser's to report.
        if self.chains.len() > 1 {
            if let Some(top) = self.chains.pop() {
                self.sum -= top.ternaries + top.operators;
                self.ternaries -= top.ternaries;
            }
        }
    }

    fn reset(&mut self) {
        if let Some(top) = self.chains.last_mut() {
            self.sum -= top.operators;
            top.operators = 0;
        }
    }
}

/// Whether the quote at `i` opens a raw string (`r'…'`, `R"…"`, `br'…'`, `rb"…"`).
fn raw_prefix(bytes: &[u8], i: usize) -> bool {
    let mut start = i;
    while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
        start -= 1;
    }
    let prefix = &bytes[start..i];
    prefix.len() <= 2
        && prefix.iter().any(|c| matches!(c, b'r' | b'R'))
        && prefix
            .iter()
            .all(|c| matches!(c, b'r' | b'R' | b'b' | b'B'))
}

/// The index just past the string literal whose quote is at `i`; the end of the text
/// for an unclosed one (the parser then reports it).
fn skip_string(bytes: &[u8], i: usize, raw: bool) -> usize {
    let quote = bytes[i];
    let triple = bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < bytes.len() {
        let c = bytes[j];
        if c == b'\\' && !raw {
            j += 2;
            continue;
        }
        if c == quote {
            if !triple {
                return j + 1;
            }
            if bytes.get(j + 1) == Some(&quote) && bytes.get(j + 2) == Some(&quote) {
                return j + 3;
            }
        }
        if c == b'\n' && !triple {
            return j;
        }
        j += 1;
    }
    bytes.len()
}

/// The index just past the number at `i`: `12`, `1.5`, `2e-3`, `0x1F`, `7u`.
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
    } else {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(bytes.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                i = j;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
    }
    if matches!(bytes.get(i), Some(b'u' | b'U')) {
        i += 1;
    }
    i
}

/// What a parsed expression is made of.
#[derive(Debug, Default)]
pub struct Shape {
    /// The deepest path through the tree, in nodes.
    pub depth: usize,
    /// Every function and operator called (`_+_`, `size`, `v`, `math.greatest`).
    pub functions: BTreeSet<String>,
    /// Every name read that no comprehension (`all`, `map`, …) binds.
    pub variables: BTreeSet<String>,
}

/// Names a comprehension binds, innermost first.
struct Binding<'a> {
    names: [&'a str; 3],
    outer: Option<Rc<Binding<'a>>>,
}

fn is_bound(scope: &Option<Rc<Binding<'_>>>, name: &str) -> bool {
    let mut at = scope.as_ref();
    while let Some(s) = at {
        if s.names.contains(&name) {
            return true;
        }
        at = s.outer.as_ref();
    }
    false
}

/// Measures `root` with an explicit stack, so that even a tree far deeper than
/// [`prescan`] lets through cannot overflow it.
pub fn walk(root: &IdedExpr) -> Shape {
    let mut shape = Shape::default();
    let mut stack: Vec<(&IdedExpr, usize, Option<Rc<Binding<'_>>>)> = vec![(root, 1, None)];
    while let Some((node, depth, scope)) = stack.pop() {
        shape.depth = shape.depth.max(depth);
        let next = depth + 1;
        match &node.expr {
            // `@result` and the like are the macros' own.
            Node::Ident(name) if !name.starts_with('@') && !is_bound(&scope, name) => {
                shape.variables.insert(name.clone());
            }
            Node::Unspecified | Node::Literal(_) | Node::Ident(_) => {}
            Node::Select(select) => stack.push((&select.operand, next, scope)),
            Node::Call(call) => {
                shape.functions.insert(call.func_name.clone());
                if let Some(target) = &call.target {
                    stack.push((target, next, scope.clone()));
                }
                for arg in &call.args {
                    stack.push((arg, next, scope.clone()));
                }
            }
            Node::List(list) => {
                for e in &list.elements {
                    stack.push((e, next, scope.clone()));
                }
            }
            Node::Map(map) => {
                for entry in &map.entries {
                    entries(&mut stack, &entry.expr, next, &scope);
                }
            }
            Node::Struct(st) => {
                for entry in &st.entries {
                    entries(&mut stack, &entry.expr, next, &scope);
                }
            }
            Node::Comprehension(c) => {
                stack.push((&c.iter_range, next, scope.clone()));
                stack.push((&c.accu_init, next, scope.clone()));
                let inner = Some(Rc::new(Binding {
                    names: [
                        c.iter_var.as_str(),
                        c.iter_var2.as_deref().unwrap_or(""),
                        c.accu_var.as_str(),
                    ],
                    outer: scope,
                }));
                for e in [&c.loop_cond, &c.loop_step, &c.result] {
                    stack.push((e, next, inner.clone()));
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    shape
}

type Frame<'a> = (&'a IdedExpr, usize, Option<Rc<Binding<'a>>>);

fn entries<'a>(
    stack: &mut Vec<Frame<'a>>,
    entry: &'a EntryExpr,
    depth: usize,
    scope: &Option<Rc<Binding<'a>>>,
) {
    match entry {
        EntryExpr::StructField(field) => stack.push((&field.value, depth, scope.clone())),
        EntryExpr::MapEntry(e) => {
            stack.push((&e.key, depth, scope.clone()));
            stack.push((&e.value, depth, scope.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str) -> bool {
        prescan(text).is_ok()
    }

    #[test]
    fn length_is_bounded() {
        assert_eq!(
            prescan(&"1".repeat(MAX_LEN + 1)),
            Err(Bound::Length(MAX_LEN + 1))
        );
        assert!(prescan(&" ".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn chains_and_nesting_are_bounded() {
        assert!(!depth_ok(&vec!["1"; 7000].join("+")));
        assert!(!depth_ok(&format!(
            "{}1{}",
            "(".repeat(200),
            ")".repeat(200)
        )));
        assert!(!depth_ok(&format!("a{}", "[0]".repeat(120))));
        assert!(!depth_ok(&format!("{}1{}", "[".repeat(60), "]".repeat(60))));
        assert!(!depth_ok(&format!("{}0{}", "x ? 0 : ".repeat(120), "1")));
        assert!(!depth_ok(&format!("a{}", ".b".repeat(120))));
        assert!(!depth_ok(&"!".repeat(200)));
        assert!(depth_ok(&vec!["1"; 90].join("+")));
        // Balanced by CEL: each clause counts on its own.
        assert!(depth_ok(&vec!["a.b == 1"; 500].join(" && ")));
        assert!(depth_ok(&vec!["[1, 2]"; 500].join(", ")));
        assert!(depth_ok(
            "steps['plan-hops'].output.current < 16 && steps['plan-hops'].output.target >= 16"
        ));
    }

    #[test]
    fn strings_and_numbers_do_not_count() {
        let long_string = format!("'{}' == x", "+(.".repeat(1000));
        assert!(depth_ok(&long_string));
        // A raw string ends at its first quote: the chain after it counts.
        assert!(!depth_ok(&format!("r'\\' + {}", vec!["1"; 200].join("+"))));
        assert!(depth_ok(&format!("'\\'{}' == x", "+".repeat(500))));
        assert!(depth_ok(&format!(
            "\"\"\"{}\"\"\" != ''",
            "'\"(".repeat(900)
        )));
        assert!(depth_ok(&vec!["1.5e-3"; 40].join(" < 1 || ")));
    }
}
