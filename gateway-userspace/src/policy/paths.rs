//! Path helpers for CEL conditions. A condition such as `arguments.path.startsWith("/srv/data/")`
//! is walked around with `/srv/data/../../etc/passwd`; these normalise first, lexically (`.`,
//! `..` and repeated slashes resolved, never above `/`), then compare on segment boundaries:
//!
//! - `normalize_path(p)`: the normalised path (a relative path stays relative).
//! - `path_within(p, dir)`: true when `p` is absolute and, normalised, is `dir` or below it.
//!
//! They see strings, not the server's file system: a symlink inside `dir` that points outside
//! it is the server's to refuse.
use std::sync::Arc;

/// Lexical normalisation; None for a path holding a NUL byte (no file system accepts one).
pub fn normalize(p: &str) -> Option<String> {
    if p.contains('\0') {
        return None;
    }
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    Some(if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    })
}

/// Whether `p` is `dir` or below it, both normalised; a relative `p` never is.
pub fn within(p: &str, dir: &str) -> bool {
    let (Some(p), Some(d)) = (normalize(p), normalize(dir)) else { return false };
    if !p.starts_with('/') || !d.starts_with('/') {
        return false;
    }
    crate::identity::is_under(&p, &d)
}

/// Adds the helpers to a CEL context.
pub fn register(cx: &mut cel::Context) {
    // Both names are ours, so no built-in overload can conflict with them.
    let _ = cx.add_function("normalize_path", |p: Arc<String>| normalize(&p).unwrap_or_default());
    let _ = cx.add_function("path_within", |p: Arc<String>, dir: Arc<String>| within(&p, &dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dot_segments_without_escaping_the_root() {
        assert_eq!(normalize("/srv/data/../../etc/passwd").as_deref(), Some("/etc/passwd"));
        assert_eq!(normalize("/../../x").as_deref(), Some("/x"));
        assert_eq!(normalize("//srv///data/./a").as_deref(), Some("/srv/data/a"));
        assert_eq!(normalize("a/../../b").as_deref(), Some("../b"));
        assert_eq!(normalize("/a\0b"), None);
    }

    #[test]
    fn within_compares_whole_segments() {
        assert!(within("/srv/data/a.txt", "/srv/data"));
        assert!(within("/srv/data", "/srv/data/"));
        assert!(!within("/srv/data/../secret", "/srv/data"));
        assert!(!within("/srv/database/x", "/srv/data"));
        assert!(!within("srv/data/x", "/srv/data"), "relative paths are never within");
    }

    #[test]
    fn cel_conditions_can_use_them() {
        let mut cx = cel::Context::default();
        register(&mut cx);
        cx.add_variable_from_value("p", "/srv/data/../../etc/passwd".to_string());
        let run = |src: &str| cel::Program::compile(src).unwrap().execute(&cx).unwrap();
        assert_eq!(run(r#"path_within(p, "/srv/data")"#), cel::Value::Bool(false));
        assert_eq!(run(r#"p.startsWith("/srv/data/")"#), cel::Value::Bool(true), "the naive check is fooled");
        assert_eq!(run(r#"normalize_path(p)"#), cel::Value::String(Arc::new("/etc/passwd".into())));
    }
}
