//! Exact decimal amounts for metric reconciliation.
//!
//! Engines return metric sums as text; parsing them into an [`Amount`]
//! keeps decimal sums exact, so "the parts explain the delta" can be
//! checked to the cent rather than to a float's rounding.

use std::fmt;
use std::ops::{Add, Neg, Sub};

use serde::{Deserialize, Serialize};

use crate::Value;

/// The most fractional digits an amount keeps (more are rounded half away
/// from zero; only floats produce them).
pub const MAX_SCALE: u32 = 12;

/// An exact decimal: `units × 10^-scale`.
///
/// ```
/// use backfill_core::Amount;
/// let a: Amount = "1234.50".parse().unwrap();
/// let b: Amount = "-0.25".parse().unwrap();
/// assert_eq!((a + b).to_string(), "1234.25");
/// assert_eq!(Amount::from(3).to_string(), "3");
/// ```
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Amount {
    units: i128,
    scale: u32,
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount { units: 0, scale: 0 };

    /// Whether this is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.units == 0
    }

    /// The nearest float.
    pub fn to_f64(&self) -> f64 {
        self.units as f64 / 10f64.powi(self.scale as i32)
    }

    /// The absolute value.
    pub fn abs(self) -> Amount {
        Amount {
            units: self.units.abs(),
            scale: self.scale,
        }
    }

    /// Reads an engine value: integers and exact decimal text stay exact;
    /// floats go through their shortest decimal form. NULL is zero.
    pub fn from_value(v: &Value) -> Option<Amount> {
        match v {
            Value::Null => Some(Amount::ZERO),
            Value::Int(n) => Some(Amount::from(*n)),
            Value::Float(f) if f.is_finite() => format!("{f:?}").parse().ok(),
            Value::Text(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(Amount::from(i64::from(*b))),
            _ => None,
        }
    }

    fn rescale(self, scale: u32) -> i128 {
        self.units * 10i128.pow(scale - self.scale)
    }

    fn aligned(a: Amount, b: Amount) -> (i128, i128, u32) {
        let s = a.scale.max(b.scale);
        (a.rescale(s), b.rescale(s), s)
    }

    fn normalized(mut self) -> Amount {
        while self.scale > 0 && self.units % 10 == 0 {
            self.units /= 10;
            self.scale -= 1;
        }
        self
    }
}

impl From<i64> for Amount {
    fn from(n: i64) -> Self {
        Amount {
            units: i128::from(n),
            scale: 0,
        }
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        let (a, b, _) = Amount::aligned(*self, *other);
        a == b
    }
}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        let (a, b, _) = Amount::aligned(*self, *other);
        a.partial_cmp(&b)
    }
}

impl Add for Amount {
    type Output = Amount;
    fn add(self, o: Amount) -> Amount {
        let (a, b, scale) = Amount::aligned(self, o);
        Amount {
            units: a + b,
            scale,
        }
        .normalized()
    }
}

impl Sub for Amount {
    type Output = Amount;
    fn sub(self, o: Amount) -> Amount {
        self + (-o)
    }
}

impl Neg for Amount {
    type Output = Amount;
    fn neg(self) -> Amount {
        Amount {
            units: -self.units,
            scale: self.scale,
        }
    }
}

impl std::iter::Sum for Amount {
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Amount {
        iter.fold(Amount::ZERO, |a, b| a + b)
    }
}

/// Why a text is not an amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAmountError(String);

impl fmt::Display for ParseAmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a decimal amount: {:?}", self.0)
    }
}

impl std::error::Error for ParseAmountError {}

impl std::str::FromStr for Amount {
    type Err = ParseAmountError;

    /// Parses `-123.45`, `1e3`, `1.5E-2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseAmountError(s.to_string());
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (s, 0),
        };
        let (neg, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let all: String = format!("{int}{frac}");
        let mut scale = frac.len() as i64 - i64::from(exp);
        let mut all = all.trim_start_matches('0').to_string();
        if scale < 0 {
            all.extend(std::iter::repeat_n('0', (-scale) as usize));
            scale = 0;
        }
        // Round away digits beyond MAX_SCALE (only floats have them).
        let mut round_up = false;
        while scale > i64::from(MAX_SCALE) {
            round_up = all.pop().is_some_and(|c| c >= '5');
            scale -= 1;
        }
        let mut units: i128 = if all.is_empty() {
            0
        } else {
            all.parse().map_err(|_| bad())?
        };
        if round_up {
            units += 1;
        }
        if neg {
            units = -units;
        }
        Ok(Amount {
            units,
            scale: scale as u32,
        }
        .normalized())
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let digits = self.units.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl From<Amount> for String {
    fn from(a: Amount) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Amount {
    type Error = ParseAmountError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
