//! Exact decimal amounts for metric reconciliation.
//!
//! Engines return metric sums as text; parsing them into an [`Amount`]
//! keeps decimal sums exact, so "the parts explain the delta" can be
//! checked to the cent rather than to a float's rounding.
//!
//! Arithmetic is checked: an amount holds up to 38 significant digits,
//! and a sum beyond that is [`Error::AmountOutOfRange`], never a panic or
//! a wrapped value. Comparisons are exact at any size.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Neg;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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
/// assert_eq!(a.checked_add(b).unwrap().to_string(), "1234.25");
/// assert_eq!(Amount::from(3).to_string(), "3");
/// let huge: Amount = "1e37".parse().unwrap();
/// assert!(huge.checked_add(huge).is_ok());
/// assert!(Amount::try_sum([huge; 20]).is_err()); // beyond 38 digits
/// assert!(huge > "0.000000000001".parse::<Amount>().unwrap());
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

    /// `units` at a larger `scale`, if it fits.
    fn rescale(self, scale: u32) -> Option<i128> {
        10i128
            .checked_pow(scale - self.scale)
            .and_then(|f| self.units.checked_mul(f))
    }

    /// Both at the larger scale, if both fit.
    fn aligned(a: Amount, b: Amount) -> Option<(i128, i128, u32)> {
        let s = a.scale.max(b.scale);
        Some((a.rescale(s)?, b.rescale(s)?, s))
    }

    /// `self + o`, or [`Error::AmountOutOfRange`] beyond 38 digits.
    pub fn checked_add(self, o: Amount) -> Result<Amount> {
        Amount::aligned(self, o)
            .and_then(|(a, b, scale)| Some((a.checked_add(b)?, scale)))
            .map(|(units, scale)| Amount { units, scale }.normalized())
            .ok_or_else(|| Error::AmountOutOfRange(format!("{self} + {o}")))
    }

    /// `self - o`, or [`Error::AmountOutOfRange`] beyond 38 digits.
    pub fn checked_sub(self, o: Amount) -> Result<Amount> {
        self.checked_add(-o)
    }

    /// The sum of `items`, or [`Error::AmountOutOfRange`] once it leaves
    /// the range.
    pub fn try_sum(items: impl IntoIterator<Item = Amount>) -> Result<Amount> {
        items
            .into_iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
    }

    /// Reads an engine value as [`Amount::from_value`] does, with a typed
    /// error for what is not a finite amount in range (NaN, infinity, a
    /// float beyond 38 digits, text that is not a number).
    pub fn read(v: &Value) -> Result<Amount> {
        Amount::from_value(v).ok_or_else(|| Error::AmountOutOfRange(format!("{v:?}")))
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

impl Amount {
    /// Exact comparison at any size: where aligning the scales would
    /// overflow, the amount that overflowed is the larger in magnitude.
    fn compare(&self, other: &Amount) -> Ordering {
        if let Some((a, b, _)) = Amount::aligned(*self, *other) {
            return a.cmp(&b);
        }
        // Only the one with the smaller scale can overflow when scaled up;
        // its magnitude then exceeds anything the other can hold.
        let (small_scale, flip) = if self.scale < other.scale {
            (self, false)
        } else {
            (other, true)
        };
        let ord = if small_scale.units > 0 {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        if flip {
            ord.reverse()
        } else {
            ord
        }
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        self.compare(other) == Ordering::Equal
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Self) -> Ordering {
        self.compare(other)
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
            if -scale > 40 {
                return Err(bad());
            }
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
            units = units.checked_add(1).ok_or_else(bad)?;
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
