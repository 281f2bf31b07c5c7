//! `${VAR}` and `${VAR:-default}` interpolation of config strings (`$$` is a literal `$`).
//! Pure: the environment is a function passed in.

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` stays a literal `$`. `Ok(None)` when the
/// string has nothing to replace.
pub fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            // Where, not the value: it may be a secret, or very long.
            let end = body.find('}').ok_or_else(|| {
                // 1-based, counted in characters: `body` follows the `${`.
                let at = s[..s.len() - body.len() - 2].chars().count() + 1;
                format!("unclosed `${{` at character {at} of the value")
            })?;
            let expr = &body[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                // A default may be a secret: never quoted.
                let shown = match default {
                    Some(_) => format!("${{{}:-…}}", cut(var)),
                    None => format!("${{{}}}", cut(var)),
                };
                return Err(format!("`{shown}` is not a variable name"));
            }
            // As in a shell, `:-` takes the default for an empty variable too. Without
            // a default an empty one is an error like a missing one: `docker -e KEY=`
            // and compose files set variables empty, and an empty key or password
            // would be sent as it is.
            match (env(var).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) if env(var).is_some() => {
                    return Err(format!(
                        "environment variable {var} is set but empty (use ${{{var}:-}} if empty is meant)"
                    ))
                }
                (None, None) => {
                    return Err(format!(
                    "environment variable {var} is not set (freesky sees the environment it was \
                     started with: set it and restart, or give `${{{var}:-default}}`)"
                ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// `text` as a message quotes it: its first 40 characters, then `…` when longer.
fn cut(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "KEY" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            interpolate("a${KEY}b", &env).unwrap().as_deref(),
            Some("as3cretb")
        );
        assert_eq!(
            interpolate("${NOPE:-x}", &env).unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(interpolate("${NOPE:-}", &env).unwrap().as_deref(), Some(""));
        assert_eq!(interpolate("$$5", &env).unwrap().as_deref(), Some("$5"));
        assert_eq!(interpolate("plain", &env).unwrap(), None);
        assert!(interpolate("${NOPE}", &env).unwrap_err().contains("NOPE"));
        // Where, not the value (a secret, or very long).
        assert_eq!(
            interpolate("pässwörd${KEY", &env).unwrap_err(),
            "unclosed `${` at character 9 of the value"
        );
        let long = format!("${{{}}}", "x-".repeat(100));
        assert_eq!(
            interpolate(&long, &env).unwrap_err(),
            format!("`${{{}…}}` is not a variable name", "x-".repeat(20))
        );
        assert_eq!(
            interpolate("${bad-name:-s3cret}", &env).unwrap_err(),
            "`${bad-name:-…}` is not a variable name"
        );
        let e = interpolate("Bearer ${EMPTY}", &env).unwrap_err();
        assert!(e.contains("EMPTY is set but empty"), "{e}");
        assert_eq!(
            interpolate("${EMPTY:-x}", &env).unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(
            interpolate("${EMPTY:-}", &env).unwrap().as_deref(),
            Some("")
        );
    }
}
