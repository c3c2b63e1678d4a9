//! Guards: the conjuncts of a condition that can be checked without the CEL interpreter. Most
//! rules start with a test of one attribute against a constant (`mcp.tool == "delete_file" &&
//! ...`, `llm.model == "gpt-4o" && ...`); when such a conjunct is false the whole condition is
//! false (CEL's `&&` is false when any operand is false, whatever the others give), so the rule
//! is skipped without building the request's CEL values at all. A guard that cannot tell (an
//! attribute not read natively, a type other than the constant's) leaves the rule to CEL.
use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use super::attrs::{Attributes, Family};

/// A constant a guard compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// An attribute's value as the native reader gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(std::borrow::Cow<'a, str>),
    Int(i64),
    Bool(bool),
}

/// How a string attribute is tested against a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrTest {
    StartsWith,
    EndsWith,
    Contains,
}

/// How an integer attribute is compared with a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// `family.field == constant` (`negated`: `!=`)
    Eq { family: Family, field: String, value: Lit, negated: bool },
    /// `family.field.startsWith("...")`, `endsWith`, `contains`
    Str { family: Family, field: String, test: StrTest, arg: String },
    /// `family.field in [constants]`
    In { family: Family, field: String, values: Vec<Lit> },
    /// `family.field < 10` and the like, on integers
    Cmp { family: Family, field: String, op: Cmp, value: i64 },
    /// `"key" in family.field` (a map)
    HasKey { family: Family, field: String, key: String },
    /// `family.field.matches("regex")`, the expression compiled once
    Matches { family: Family, field: String, re: Re },
}

/// A compiled regular expression, compared by its source.
#[derive(Debug, Clone)]
pub struct Re(pub regex::Regex);

impl PartialEq for Re {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

fn equal(s: &Scalar<'_>, v: &Lit) -> Option<bool> {
    match (s, v) {
        (Scalar::Str(s), Lit::Str(v)) => Some(**s == **v),
        (Scalar::Int(i), Lit::Int(v)) => Some(i == v),
        (Scalar::Bool(b), Lit::Bool(v)) => Some(b == v),
        _ => None,
    }
}

impl Guard {
    /// Whether the guard holds for this request; None when it cannot tell natively.
    pub fn holds(&self, n: &dyn Attributes) -> Option<bool> {
        match self {
            Self::Eq { family, field, value, negated } => {
                equal(&n.scalar(*family, field)?, value).map(|e| e != *negated)
            }
            Self::Str { family, field, test, arg } => match n.scalar(*family, field)? {
                Scalar::Str(s) => Some(match test {
                    StrTest::StartsWith => s.starts_with(arg.as_str()),
                    StrTest::EndsWith => s.ends_with(arg.as_str()),
                    StrTest::Contains => s.contains(arg.as_str()),
                }),
                _ => None,
            },
            Self::In { family, field, values } => {
                let s = n.scalar(*family, field)?;
                let mut found = false;
                for v in values {
                    found |= equal(&s, v)?;
                }
                Some(found)
            }
            Self::Cmp { family, field, op, value } => match n.scalar(*family, field)? {
                Scalar::Int(i) => Some(match op {
                    Cmp::Lt => i < *value,
                    Cmp::Le => i <= *value,
                    Cmp::Gt => i > *value,
                    Cmp::Ge => i >= *value,
                }),
                _ => None,
            },
            Self::HasKey { family, field, key } => n.has_key(*family, field, key),
            Self::Matches { family, field, re } => match n.scalar(*family, field)? {
                Scalar::Str(s) => Some(re.0.is_match(&s)),
                _ => None,
            },
        }
    }
}

/// A condition's guards, and whether they are all of it (every top-level conjunct is a guard):
/// then guards that all hold decide the condition true without CEL.
pub struct Guards {
    pub guards: Vec<Guard>,
    pub complete: bool,
}

/// The guards of a condition: its top-level `&&` operands of a form above.
pub fn extract(e: &IdedExpr) -> Guards {
    let mut conjuncts = Vec::new();
    flatten_and(e, &mut conjuncts);
    let n = conjuncts.len();
    let guards: Vec<Guard> = conjuncts.into_iter().filter_map(guard_of).collect();
    Guards { complete: guards.len() == n, guards }
}

fn flatten_and<'e>(e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    match &e.expr {
        Expr::Call(c) if c.func_name == operators::LOGICAL_AND && c.target.is_none() && c.args.len() == 2 => {
            flatten_and(&c.args[0], out);
            flatten_and(&c.args[1], out);
        }
        _ => out.push(e),
    }
}

/// `family.field` with family one of ours.
fn attribute(e: &IdedExpr) -> Option<(Family, String)> {
    let Expr::Select(s) = &e.expr else { return None };
    if s.test {
        return None;
    }
    let Expr::Ident(name) = &s.operand.expr else { return None };
    let family = Family::ALL.into_iter().find(|f| f.name() == name)?;
    Some((family, s.field.clone()))
}

fn literal(e: &IdedExpr) -> Option<Lit> {
    let Expr::Literal(l) = &e.expr else { return None };
    match l {
        LiteralValue::String(s) => Some(Lit::Str(s.inner().to_string())),
        LiteralValue::Int(i) => Some(Lit::Int(*i.inner())),
        LiteralValue::Boolean(b) => Some(Lit::Bool(*b.inner())),
        _ => None,
    }
}

fn guard_of(e: &IdedExpr) -> Option<Guard> {
    let Expr::Call(c) = &e.expr else { return None };
    let attribute_and_literal = |a: &IdedExpr, b: &IdedExpr| attribute(a).zip(literal(b));
    match (c.func_name.as_str(), &c.target, c.args.as_slice()) {
        (op @ (operators::EQUALS | operators::NOT_EQUALS), None, [a, b]) => {
            let ((family, field), value) =
                attribute_and_literal(a, b).or_else(|| attribute_and_literal(b, a))?;
            Some(Guard::Eq { family, field, value, negated: op == operators::NOT_EQUALS })
        }
        ("matches", Some(t), [p]) => {
            let (family, field) = attribute(t)?;
            let Lit::Str(pattern) = literal(p)? else { return None };
            // A pattern the engine refuses stays CEL's (which reports it when evaluated).
            let re = regex::Regex::new(&pattern).ok()?;
            Some(Guard::Matches { family, field, re: Re(re) })
        }
        (name @ ("startsWith" | "endsWith" | "contains"), Some(t), [p]) => {
            let (family, field) = attribute(t)?;
            let Lit::Str(arg) = literal(p)? else { return None };
            let test = match name {
                "startsWith" => StrTest::StartsWith,
                "endsWith" => StrTest::EndsWith,
                _ => StrTest::Contains,
            };
            Some(Guard::Str { family, field, test, arg })
        }
        (operators::IN, None, [k, m]) => match &m.expr {
            Expr::List(l) => {
                let (family, field) = attribute(k)?;
                let values = l.elements.iter().map(literal).collect::<Option<Vec<_>>>()?;
                Some(Guard::In { family, field, values })
            }
            _ => {
                let Lit::Str(key) = literal(k)? else { return None };
                let (family, field) = attribute(m)?;
                Some(Guard::HasKey { family, field, key })
            }
        },
        (
            op @ (operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS),
            None,
            [a, b],
        ) => {
            let ((family, field), Lit::Int(value)) = attribute(a).zip(literal(b))? else { return None };
            let op = match op {
                operators::LESS => Cmp::Lt,
                operators::LESS_EQUALS => Cmp::Le,
                operators::GREATER => Cmp::Gt,
                _ => Cmp::Ge,
            };
            Some(Guard::Cmp { family, field, op, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_the_constant_tests_among_the_top_level_conjuncts() {
        let p = cel::Program::compile(
            r#"mcp.tool == "x" && 3 == destination.port && (a || b) && request.path.startsWith("/a") && "k" in request.headers && size(x) > 1"#,
        )
        .unwrap();
        let g = extract(p.expression());
        assert!(!g.complete, "two conjuncts are left to CEL");
        assert_eq!(
            g.guards,
            vec![
                Guard::Eq {
                    family: Family::Mcp,
                    field: "tool".into(),
                    value: Lit::Str("x".into()),
                    negated: false
                },
                Guard::Eq {
                    family: Family::Destination,
                    field: "port".into(),
                    value: Lit::Int(3),
                    negated: false
                },
                Guard::Str {
                    family: Family::Request,
                    field: "path".into(),
                    test: StrTest::StartsWith,
                    arg: "/a".into()
                },
                Guard::HasKey { family: Family::Request, field: "headers".into(), key: "k".into() },
            ]
        );
        let p = cel::Program::compile(
            r#"llm.model in ["a", "b"] && llm.max_tokens >= 100 && source.principal != "" && request.path.contains("x")"#,
        )
        .unwrap();
        let g = extract(p.expression());
        assert!(g.complete && g.guards.len() == 4, "{:?}", g.guards);
        // Under an `||` nothing is a guard: one false operand does not make the whole false.
        let p = cel::Program::compile(r#"mcp.tool == "x" || llm.model == "y""#).unwrap();
        assert!(extract(p.expression()).guards.is_empty());
        let p = cel::Program::compile(r#"!(mcp.tool == "x")"#).unwrap();
        assert!(extract(p.expression()).guards.is_empty());
        // An attribute compared with an attribute is CEL's.
        let p = cel::Program::compile(r#"request.host == destination.host"#).unwrap();
        assert!(extract(p.expression()).guards.is_empty());
    }
}
