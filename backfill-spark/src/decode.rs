//! Arrow results and Spark types as the library's values and column types.

use std::io::Cursor;

use backfill_core::jiff::civil::Date;
use backfill_core::jiff::tz::TimeZone;
use backfill_core::jiff::{Timestamp, ToSpan};
use backfill_core::{ColumnType, Error, Result, Value};
use spark_arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use spark_arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use spark_arrow::ipc::reader::StreamReader;
use spark_arrow::util::display::{ArrayFormatter, FormatOptions};
use spark_connect_proto as pb;

fn arrow_error(e: spark_arrow::error::ArrowError) -> Error {
    Error::engine(format!("reading a Spark result: {e}"))
}

/// The record batches of one Arrow IPC stream.
pub(crate) fn arrow_ipc(data: &[u8]) -> Result<Vec<RecordBatch>> {
    StreamReader::try_new(Cursor::new(data), None)
        .map_err(arrow_error)?
        .map(|b| b.map_err(arrow_error))
        .collect()
}

/// The rows of `batches`.
pub(crate) fn batches(batches: Vec<RecordBatch>) -> Result<Vec<Vec<Value>>> {
    Ok(named(batches)?.1)
}

/// The column names and the rows of `batches`.
pub(crate) fn named(batches: Vec<RecordBatch>) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for b in batches {
        if names.is_empty() {
            names = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let start = rows.len();
        rows.extend((0..b.num_rows()).map(|_| Vec::with_capacity(b.num_columns())));
        for col in b.columns() {
            for (i, row) in rows[start..].iter_mut().enumerate() {
                row.push(value(col, i)?);
            }
        }
    }
    Ok((names, rows))
}

const MICROS_A_DAY: i64 = 86_400_000_000;

fn instant(n: i64, unit: TimeUnit) -> Result<Timestamp> {
    let t = match unit {
        TimeUnit::Second => Timestamp::from_second(n),
        TimeUnit::Millisecond => Timestamp::from_millisecond(n),
        TimeUnit::Microsecond => Timestamp::from_microsecond(n),
        TimeUnit::Nanosecond => Timestamp::from_nanosecond(i128::from(n)),
    };
    t.map_err(|e| Error::engine(format!("a Spark timestamp out of range: {e}")))
}

fn day(days: i64) -> Result<Date> {
    Date::constant(1970, 1, 1)
        .checked_add(days.days())
        .map_err(|e| Error::engine(format!("a Spark date out of range: {e}")))
}

/// The value at row `i` of `col`.
fn value(col: &ArrayRef, i: usize) -> Result<Value> {
    if col.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match col.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(col.as_boolean().value(i)),
        DataType::Int8 => Value::Int(col.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Value::Int(col.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Value::Int(col.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Value::Int(col.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::Int(col.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Value::Int(col.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Value::Int(col.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => {
            let n = col.as_primitive::<UInt64Type>().value(i);
            i64::try_from(n).map_or_else(|_| Value::Text(n.to_string()), Value::Int)
        }
        DataType::Float16 => Value::Float(col.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => Value::Float(col.as_primitive::<Float32Type>().value(i).into()),
        DataType::Float64 => Value::Float(col.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, _) => {
            Value::Text(col.as_primitive::<Decimal128Type>().value_as_string(i))
        }
        DataType::Utf8 => Value::Text(col.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::Text(col.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::Text(col.as_string_view().value(i).to_string()),
        DataType::Date32 => Value::Date(day(col.as_primitive::<Date32Type>().value(i).into())?),
        DataType::Date64 => {
            let ms = col.as_primitive::<Date64Type>().value(i);
            Value::Date(day(ms.div_euclid(MICROS_A_DAY / 1000))?)
        }
        DataType::Timestamp(unit, zone) => {
            let n = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(i),
            };
            let t = instant(n, *unit)?;
            match zone {
                // An instant; Arrow stores it as UTC whatever its zone.
                Some(_) => Value::Timestamp(t),
                // A wall-clock time, stored as if in UTC.
                None => Value::DateTime(t.to_zoned_datetime(TimeZone::UTC).datetime()),
            }
        }
        _ => {
            let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
                .map_err(arrow_error)?;
            Value::Text(f.value(i).to_string())
        }
    })
}

/// A Spark type as the library's column type.
pub(crate) fn column_type(t: Option<&pb::DataType>) -> ColumnType {
    use pb::data_type::Kind;
    match t.and_then(|t| t.kind.as_ref()) {
        Some(Kind::Boolean(_)) => ColumnType::Bool,
        Some(Kind::Byte(_) | Kind::Short(_) | Kind::Integer(_) | Kind::Long(_)) => ColumnType::Int,
        Some(Kind::Float(_) | Kind::Double(_)) => ColumnType::Float,
        Some(Kind::Decimal(_)) => ColumnType::Decimal,
        Some(Kind::String(_) | Kind::Char(_) | Kind::VarChar(_)) => ColumnType::Text,
        Some(Kind::Date(_)) => ColumnType::Date,
        Some(Kind::TimestampNtz(_)) => ColumnType::DateTime,
        Some(Kind::Timestamp(_)) => ColumnType::Timestamp,
        _ => ColumnType::Other,
    }
}

/// The fields of a struct type (a result's schema): `(name, type,
/// nullable)`.
pub(crate) fn struct_fields(t: Option<&pb::DataType>) -> Vec<(String, ColumnType, bool)> {
    match t.and_then(|t| t.kind.as_ref()) {
        Some(pb::data_type::Kind::Struct(s)) => s
            .fields
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    column_type(f.data_type.as_ref()),
                    f.nullable,
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(day(0).unwrap(), Date::constant(1970, 1, 1));
        assert_eq!(day(-1).unwrap(), Date::constant(1969, 12, 31));
        assert_eq!(day(20454).unwrap(), Date::constant(2026, 1, 1));
    }
}
