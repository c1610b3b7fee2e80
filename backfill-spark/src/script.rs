//! Splits a script of Spark SQL statements at the semicolons that end
//! them: not those inside quoted text (`'…'`, `"…"`), quoted names
//! (`` `…` ``) or comments (`-- …`, `/* … */`).

/// The statements of `text`, trimmed, empty ones left out.
pub(crate) fn statements(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    // A backslash escapes the next character in Spark's
                    // quoted text; a quoted name has no escapes but a
                    // doubled backquote, which this also steps over.
                    if bytes[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&text[start.min(text.len())..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn semicolons_end_statements_outside_quotes_and_comments() {
        assert_eq!(
            statements("SELECT 1; SELECT 'a;b', \"c;d\", `e;f` -- g;h\n; /* i;j */ SELECT 2;;"),
            vec![
                "SELECT 1",
                "SELECT 'a;b', \"c;d\", `e;f` -- g;h",
                "/* i;j */ SELECT 2"
            ]
        );
        assert_eq!(
            statements("SELECT 'it\\'s;' ; x"),
            vec!["SELECT 'it\\'s;'", "x"]
        );
        assert_eq!(statements("  "), Vec::<&str>::new());
    }
}
