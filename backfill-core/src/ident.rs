//! Validated identifiers and table references.
//!
//! Identifiers never reach SQL unvalidated: an [`Ident`] holds only ASCII
//! letters, digits and underscores, starts with a letter or underscore, and
//! is at most 63 bytes (the PostgreSQL limit). Engines quote them anyway.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest identifier accepted, in bytes.
pub const MAX_IDENT_LEN: usize = 63;

/// A validated SQL identifier.
///
/// ```
/// use backfill_core::Ident;
/// assert!(Ident::new("orders").is_ok());
/// assert!(Ident::new("orders; DROP TABLE x").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(String);

impl Ident {
    /// Validates `s` as an identifier.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        let bad = |reason: &str| Error::InvalidIdentifier {
            ident: s.clone(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > MAX_IDENT_LEN {
            return Err(bad("longer than 63 bytes"));
        }
        let mut chars = s.chars();
        let first = chars.next().unwrap_or('0');
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(bad("must start with a letter or underscore"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(
                "only ASCII letters, digits and underscores are allowed",
            ));
        }
        Ok(Ident(s))
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This identifier with a suffix appended, validated again (so the
    /// length limit holds).
    pub fn with_suffix(&self, suffix: &str) -> Result<Ident> {
        Ident::new(format!("{}{}", self.0, suffix))
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Ident {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Ident::new(s)
    }
}

impl TryFrom<&str> for Ident {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Ident::new(s)
    }
}

impl From<Ident> for String {
    fn from(i: Ident) -> String {
        i.0
    }
}

impl std::str::FromStr for Ident {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ident::new(s)
    }
}

/// A table, optionally qualified by a schema.
///
/// ```
/// use backfill_core::TableRef;
/// let t = TableRef::parse("analytics.revenue").unwrap();
/// assert_eq!(t.to_string(), "analytics.revenue");
/// assert!(TableRef::parse("a.b.c").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableRef {
    /// The schema, if qualified.
    pub schema: Option<Ident>,
    /// The table name.
    pub name: Ident,
}

impl TableRef {
    /// An unqualified table.
    pub fn new(name: Ident) -> Self {
        TableRef { schema: None, name }
    }

    /// A schema-qualified table.
    pub fn qualified(schema: Ident, name: Ident) -> Self {
        TableRef {
            schema: Some(schema),
            name,
        }
    }

    /// Parses `name` or `schema.name`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [name] => Ok(TableRef::new(Ident::new(*name)?)),
            [schema, name] => Ok(TableRef::qualified(
                Ident::new(*schema)?,
                Ident::new(*name)?,
            )),
            _ => Err(Error::InvalidIdentifier {
                ident: s.to_string(),
                reason: "expected `table` or `schema.table`".into(),
            }),
        }
    }

    /// A sibling table in the same schema whose name is this table's name
    /// plus `suffix`.
    pub fn sibling(&self, suffix: &str) -> Result<TableRef> {
        Ok(TableRef {
            schema: self.schema.clone(),
            name: self.name.with_suffix(suffix)?,
        })
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{}.{}", s, self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl TryFrom<String> for TableRef {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TableRef::parse(&s)
    }
}

impl From<TableRef> for String {
    fn from(t: TableRef) -> String {
        t.to_string()
    }
}

impl std::str::FromStr for TableRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TableRef::parse(s)
    }
}

/// Parses a list of identifiers, failing on the first bad one.
pub fn idents<I, S>(names: I) -> Result<Vec<Ident>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    names.into_iter().map(Ident::new).collect()
}
