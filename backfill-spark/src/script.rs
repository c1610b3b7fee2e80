//! Splits a script of Spark SQL statements at the semicolons that end
//! them: not those inside quoted text (`'…'`, `"…"`), quoted names
//! (`` `…` ``) or comments (`-- …`, `/* … */`, which nest in Spark SQL).

/// The statements of `text`, trimmed; pieces holding only comments and
/// whitespace are left out.
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
            b'-' | b'/' => i = skip_comment(bytes, i).unwrap_or(i),
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
        .filter(|s| !blank(s.as_bytes()))
        .collect()
}

/// If a comment starts at `i`, the index of its last byte.
fn skip_comment(bytes: &[u8], mut i: usize) -> Option<usize> {
    match (bytes[i], bytes.get(i + 1)) {
        (b'-', Some(b'-')) => {
            while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                i += 1;
            }
            Some(i)
        }
        (b'/', Some(b'*')) => {
            let mut depth = 0usize;
            while i < bytes.len() {
                match (bytes[i], bytes.get(i + 1)) {
                    (b'/', Some(b'*')) => {
                        depth += 1;
                        i += 1;
                    }
                    (b'*', Some(b'/')) => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Some(bytes.len().saturating_sub(1))
        }
        _ => None,
    }
}

/// Whether `piece` holds nothing but comments and whitespace.
fn blank(piece: &[u8]) -> bool {
    let mut i = 0;
    while i < piece.len() {
        if piece[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        match skip_comment(piece, i) {
            Some(end) => i = end + 1,
            None => return false,
        }
    }
    true
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

    #[test]
    fn comments_alone_are_no_statement_and_nest() {
        assert_eq!(
            statements("REFRESH TABLE t; -- done"),
            vec!["REFRESH TABLE t"]
        );
        assert_eq!(
            statements("SELECT /* a /* b; */ c; */ 1; /* only */ ;"),
            vec!["SELECT /* a /* b; */ c; */ 1"]
        );
    }
}
