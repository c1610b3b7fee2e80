//! Strict reading of internally tagged enums: serde ignores keys beside
//! the tag of a unit variant (`{kind: partition_overwrite, keys: [id]}`
//! would read as a plain overwrite), so these enums read through a check
//! that refuses them, as `deny_unknown_fields` does for struct variants.

/// Refuses keys other than `tag` on a value whose tag names one of
/// `units`.
pub(crate) fn unit_variant_alone(
    v: &serde_json::Value,
    tag: &str,
    units: &[&str],
) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Ok(());
    };
    let Some(kind) = map.get(tag).and_then(|k| k.as_str()) else {
        return Ok(());
    };
    if !units.contains(&kind) {
        return Ok(());
    }
    match map.keys().find(|k| k.as_str() != tag) {
        Some(extra) => Err(format!(
            "unknown field `{extra}`: `{tag}: {kind}` takes no other settings"
        )),
        None => Ok(()),
    }
}

/// Implements `Serialize` and `Deserialize` for an enum declared with
/// `#[serde(remote = "Self", tag = …)]`, refusing extra keys on its unit
/// variants.
macro_rules! strict_tagged {
    ($ty:ty, $tag:literal, [$($unit:literal),* $(,)?]) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
                $crate::strict::unit_variant_alone(&v, $tag, &[$($unit),*])
                    .map_err(D::Error::custom)?;
                <$ty>::deserialize(v).map_err(D::Error::custom)
            }
        }
    };
}
pub(crate) use strict_tagged;
