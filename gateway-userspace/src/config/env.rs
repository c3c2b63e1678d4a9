//! `${VAR}` and `${VAR:-default}` substitution in the config text, before YAML parsing.
//! `$$` is a literal `$`. A variable that is unset and has no default is an error naming it and
//! the line, never an empty string.
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("line {line}: environment variable {name} is not set (use ${{{name}:-default}} for a default)")]
    Unset { name: String, line: usize },
    #[error("line {line}: unterminated ${{ (missing closing brace)")]
    Unterminated { line: usize },
    #[error("line {line}: invalid variable name {name:?}")]
    BadName { name: String, line: usize },
}

/// Substitutes variables using `lookup`; returns every error, not only the first.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<EnvError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut reported = BTreeSet::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        line += rest[..i].matches('\n').count();
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            errors.push(EnvError::Unterminated { line });
            rest = "";
            break;
        };
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(EnvError::BadName { name: name.to_string(), line });
        } else {
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    if reported.insert(name.to_string()) {
                        errors.push(EnvError::Unset { name: name.to_string(), line });
                    }
                }
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/agent".to_string())
    }

    #[test]
    fn substitutes_set_default_and_escape() {
        let got = substitute("a: ${HOME_DIR}\nb: ${NOPE:-x}\nc: $$1\nd: $x", env).unwrap();
        assert_eq!(got, "a: /home/agent\nb: x\nc: $1\nd: $x");
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let errs = substitute("a: ${A}\nb: ok\nc: ${B}\n", env).unwrap_err();
        assert_eq!(
            errs,
            vec![
                EnvError::Unset { name: "A".into(), line: 1 },
                EnvError::Unset { name: "B".into(), line: 3 }
            ]
        );
    }

    #[test]
    fn rejects_bad_names_and_unterminated() {
        let errs = substitute("a: ${A B}\nb: ${C", env).unwrap_err();
        assert!(matches!(errs[0], EnvError::BadName { .. }));
        assert_eq!(errs[1], EnvError::Unterminated { line: 2 });
    }
}
