//! Test data: the [`Seed`] trait that loads rows into any engine, and a
//! realistic, deterministic orders/refunds dataset ([`orders_dataset`]).
//!
//! The dataset is the classic "net revenue ignored refunds" incident:
//! `revenue` holds history computed with `net = gross` (the bug),
//! `revenue_corrected` the same rows with `net = gross - refunds`. Its
//! calendar has what real backfills trip over: quieter weekends,
//! month-end spikes, a daylight-saving change, a price change half-way,
//! a few high-value customers, orders late in the evening whose UTC date
//! is the next day, and known bad records ([`BadRecords`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use backfill_testkit::fake::FakeWarehouse;
//! use backfill_testkit::fixtures::{load, orders_dataset, DatasetConfig};
//!
//! let ds = orders_dataset(&DatasetConfig { orders: 500, ..DatasetConfig::default() });
//! assert_eq!(ds.revenue.len(), 500);
//! assert_eq!(ds.orders.len(), 500 + ds.bad.duplicated_orders.len());
//! let fake = FakeWarehouse::new();
//! load(&fake, &ds, None).await.unwrap();
//! assert_eq!(fake.tables().len(), 4);
//! # });
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use backfill_core::warehouse::Warehouse;
use backfill_core::{Column, ColumnType, Ident, Result, TableRef, TableSchema, Value};
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::ToSpan;
use serde::{Deserialize, Serialize};

use crate::fake::FakeWarehouse;

/// How test suites put data into an engine: create tables and views and
/// insert rows, whatever the engine.
#[async_trait]
pub trait Seed: Send + Sync {
    /// Creates an empty table with `schema`.
    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()>;

    /// Inserts rows, each in the table's column order.
    async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()>;

    /// Creates `view` as `SELECT * FROM table`.
    async fn create_view(&self, view: &TableRef, table: &TableRef) -> Result<()>;
}

#[async_trait]
impl Seed for FakeWarehouse {
    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()> {
        FakeWarehouse::create_table(self, table, schema.clone())
    }

    async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()> {
        FakeWarehouse::insert_rows(self, table, rows.to_vec())
    }

    async fn create_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        self.point_view(view, table).await
    }
}

/// A shared seeder is a seeder.
#[async_trait]
impl<T: Seed + ?Sized> Seed for Arc<T> {
    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()> {
        (**self).create_table(table, schema).await
    }

    async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()> {
        (**self).insert_rows(table, rows).await
    }

    async fn create_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        (**self).create_view(view, table).await
    }
}

/// Name of the raw orders feed table.
pub const ORDERS: &str = "orders";
/// Name of the refunds table.
pub const REFUNDS: &str = "refunds";
/// Name of the revenue fact as history has it (`net = gross`, the bug).
pub const REVENUE: &str = "revenue";
/// Name of the corrected revenue fact (`net = gross - refunds`).
pub const REVENUE_CORRECTED: &str = "revenue_corrected";

/// Rows per insert when [`load`]ing a dataset.
pub const LOAD_CHUNK: usize = 1000;

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("a valid identifier")
}

/// The raw orders feed: `order_id`, `customer_id`, `order_ts` (an
/// instant), `order_date` (the local date in the dataset's time zone),
/// `status`, `gross`, `currency`.
pub fn orders_schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(ident("order_id"), ColumnType::Int).not_null(),
            Column::new(ident("customer_id"), ColumnType::Int).not_null(),
            Column::new(ident("order_ts"), ColumnType::Timestamp).not_null(),
            Column::new(ident("order_date"), ColumnType::Date).not_null(),
            Column::new(ident("status"), ColumnType::Text).not_null(),
            Column::new(ident("gross"), ColumnType::Float).not_null(),
            Column::new(ident("currency"), ColumnType::Text).not_null(),
        ],
    }
}

/// Refunds: `refund_id`, `order_id`, `amount`, `refund_date`.
pub fn refunds_schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(ident("refund_id"), ColumnType::Int).not_null(),
            Column::new(ident("order_id"), ColumnType::Int).not_null(),
            Column::new(ident("amount"), ColumnType::Float).not_null(),
            Column::new(ident("refund_date"), ColumnType::Date).not_null(),
        ],
    }
}

/// The revenue fact (both versions): `order_id`, `order_date`,
/// `customer_id`, `gross`, `refunds` (sum of the order's refunds, 0 when
/// none), `net`.
pub fn revenue_schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(ident("order_id"), ColumnType::Int).not_null(),
            Column::new(ident("order_date"), ColumnType::Date).not_null(),
            Column::new(ident("customer_id"), ColumnType::Int).not_null(),
            Column::new(ident("gross"), ColumnType::Float),
            Column::new(ident("refunds"), ColumnType::Float),
            Column::new(ident("net"), ColumnType::Float),
        ],
    }
}

/// What [`orders_dataset`] generates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetConfig {
    /// Distinct orders (the raw feed has a few more: the duplicates).
    pub orders: usize,
    /// First day (local).
    pub start: Date,
    /// Number of days, from `start`.
    pub days: u32,
    /// IANA time zone the business day is defined in.
    pub time_zone: String,
    /// PRNG seed: the same config always gives the same dataset.
    pub seed: u64,
}

impl Default for DatasetConfig {
    /// 2,000 orders over February to April 2026 in `America/New_York`:
    /// three month-ends and the March 8 DST change.
    fn default() -> Self {
        DatasetConfig {
            orders: 2000,
            start: jiff::civil::date(2026, 2, 1),
            days: 89,
            time_zone: "America/New_York".into(),
            seed: 20_260_201,
        }
    }
}

/// Known bad records, by `order_id`. Empty when the dataset has fewer
/// than 5 orders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecords {
    /// Orders with a negative gross.
    pub negative_gross: Vec<i64>,
    /// Orders refunded more than their gross (their corrected net is
    /// negative).
    pub refund_exceeds_gross: Vec<i64>,
    /// Orders that appear twice (identical rows) in the raw `orders` feed.
    pub duplicated_orders: Vec<i64>,
}

/// A generated orders/refunds dataset; rows are in each table's column
/// order (see [`orders_schema`], [`refunds_schema`], [`revenue_schema`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The config it was generated from.
    pub config: DatasetConfig,
    /// The exclusive end date (`start + days`).
    pub end: Date,
    /// The raw orders feed, duplicates included, ordered by `order_ts`.
    pub orders: Vec<Vec<Value>>,
    /// Refunds, ordered by `refund_id`.
    pub refunds: Vec<Vec<Value>>,
    /// The revenue fact as history has it: one row per distinct order,
    /// `net = gross` (the bug).
    pub revenue: Vec<Vec<Value>>,
    /// The corrected revenue fact: `net = gross - refunds`.
    pub revenue_corrected: Vec<Vec<Value>>,
    /// Known bad records.
    pub bad: BadRecords,
    /// Distinct orders per local day, for every day in range.
    pub orders_per_day: Vec<(Date, usize)>,
    /// Days in range on which the zone's UTC offset changes.
    pub dst_days: Vec<Date>,
    /// Last days of months in range (order spikes).
    pub month_ends: Vec<Date>,
    /// From this date on, prices are 10% higher.
    pub price_change: Date,
    /// Customers with few, large orders (8x the usual basket).
    pub high_value_customers: Vec<i64>,
}

impl Dataset {
    /// Every table with its name, schema and rows, in load order.
    pub fn tables(&self) -> Vec<(&'static str, TableSchema, &[Vec<Value>])> {
        vec![
            (ORDERS, orders_schema(), &self.orders),
            (REFUNDS, refunds_schema(), &self.refunds),
            (REVENUE, revenue_schema(), &self.revenue),
            (REVENUE_CORRECTED, revenue_schema(), &self.revenue_corrected),
        ]
    }

    /// The table called `name` in `schema` (or unqualified).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid identifier.
    pub fn table_ref(name: &str, schema: Option<&Ident>) -> TableRef {
        TableRef {
            schema: schema.cloned(),
            name: ident(name),
        }
    }
}

/// Creates the dataset's tables in `schema` (or unqualified) and fills
/// them, [`LOAD_CHUNK`] rows per insert.
pub async fn load(seed: &dyn Seed, ds: &Dataset, schema: Option<&Ident>) -> Result<()> {
    for (name, table_schema, rows) in ds.tables() {
        let t = Dataset::table_ref(name, schema);
        seed.create_table(&t, &table_schema).await?;
        for chunk in rows.chunks(LOAD_CHUNK) {
            seed.insert_rows(&t, chunk).await?;
        }
    }
    Ok(())
}

/// splitmix64: small, fast and good enough for test data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn cents(c: i64) -> Value {
    Value::Float(c as f64 / 100.0)
}

fn add_days(d: Date, n: i64) -> Date {
    d.checked_add(n.days()).unwrap_or(d)
}

/// Generates the orders/refunds dataset for `cfg`, deterministically, in
/// time and memory linear in the number of orders and days.
///
/// Daily volume: weekdays weigh 10, weekends 4, month-ends 25; the
/// distinct order count is exactly `cfg.orders`. On DST change days two
/// orders are placed at 01:30 and 02:30 local time (a wall-clock time that
/// does not exist or occurs twice; the earlier/compatible instant is
/// used).
///
/// # Panics
///
/// When `cfg.time_zone` is not a known IANA time zone, or the dates leave
/// the supported range.
pub fn orders_dataset(cfg: &DatasetConfig) -> Dataset {
    let tz = TimeZone::get(&cfg.time_zone)
        .unwrap_or_else(|e| panic!("unknown time zone {:?}: {e}", cfg.time_zone));
    let instant = |d: Date, secs: u32| {
        let t = jiff::civil::time(
            (secs / 3600) as i8,
            (secs / 60 % 60) as i8,
            (secs % 60) as i8,
            0,
        );
        tz.to_ambiguous_timestamp(d.to_datetime(t))
            .compatible()
            .expect("a local time in range")
    };
    let mut rng = SplitMix(cfg.seed);

    let mut days = Vec::with_capacity(cfg.days as usize);
    let mut d = cfg.start;
    for _ in 0..cfg.days {
        days.push(d);
        d = d.tomorrow().expect("dates in range");
    }
    let end = d;
    let weight = |d: Date| -> u64 {
        if d == d.last_of_month() {
            25
        } else if matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) {
            4
        } else {
            10
        }
    };
    let total_weight: u64 = days.iter().map(|d| weight(*d)).sum();
    let month_ends: Vec<Date> = days
        .iter()
        .copied()
        .filter(|d| *d == d.last_of_month())
        .collect();
    let dst_days: Vec<Date> = days
        .iter()
        .copied()
        .filter(|d| {
            let next = d.tomorrow().unwrap_or(*d);
            tz.to_offset(instant(*d, 0)) != tz.to_offset(instant(next, 0))
        })
        .collect();
    let price_change = days.get(days.len() / 2).copied().unwrap_or(cfg.start);

    let n = cfg.orders;
    let customers = (n as u64 / 4).max(20);
    let high_value_customers = vec![1, 2, 3];
    let (neg_at, excess_at, dup_at) = if n >= 5 {
        (Some(n / 5), Some(2 * n / 5), Some(3 * n / 5))
    } else {
        (None, None, None)
    };
    let mut bad = BadRecords::default();

    let mut orders = Vec::with_capacity(n + 1);
    let mut refunds = Vec::new();
    let mut revenue = Vec::with_capacity(n);
    let mut revenue_corrected = Vec::with_capacity(n);
    let mut orders_per_day = Vec::with_capacity(days.len());
    let mut cumulative: u128 = 0;
    let mut assigned = 0usize;
    let mut next_refund = 1i64;

    for d in &days {
        let d = *d;
        cumulative += u128::from(weight(d));
        let upto = if total_weight == 0 {
            0
        } else {
            (cumulative * n as u128 / u128::from(total_weight)) as usize
        };
        let k = upto - assigned;
        orders_per_day.push((d, k));
        let dst = dst_days.contains(&d);
        for j in 0..k {
            let idx = assigned + j;
            let order_id = idx as i64 + 1;
            let secs = match j {
                0 if dst => 3600 + 1800,
                1 if dst => 2 * 3600 + 1800,
                _ => ((j as u64 * 86_400 + rng.below(86_400)) / k as u64) as u32,
            };
            let ts = instant(d, secs);

            let high_value = rng.unit() < 0.06;
            let customer_id = if high_value {
                high_value_customers[rng.below(3) as usize]
            } else {
                4 + rng.below(customers - 3) as i64
            };
            let mut gross = 500 + rng.below(19_500) as i64;
            if high_value {
                gross *= 8;
            }
            if d >= price_change {
                gross = gross * 110 / 100;
            }
            let currency = match rng.unit() {
                x if x < 0.90 => "USD",
                x if x < 0.97 => "EUR",
                _ => "GBP",
            };
            let mut status = match rng.unit() {
                x if x < 0.04 => "cancelled",
                x if x < 0.07 => "pending",
                x if x < 0.15 => "refunded",
                _ => "completed",
            };
            let partial = rng.unit() < 0.05;
            let pct = 10 + rng.below(41) as i64;
            let delay = 1 + rng.below(10) as i64;

            // The order's refunds, in cents.
            let mut refund_cents: Vec<i64> = Vec::new();
            if Some(idx) == neg_at {
                gross = -gross;
                status = "completed";
                bad.negative_gross.push(order_id);
            } else if Some(idx) == excess_at {
                status = "refunded";
                refund_cents.push(gross + 2500);
                bad.refund_exceeds_gross.push(order_id);
            } else if status == "refunded" {
                refund_cents.push(gross);
            } else if status == "completed" && partial {
                refund_cents.push(gross * pct / 100);
            }
            let mut refunded = 0;
            for amount in refund_cents {
                refunded += amount;
                refunds.push(vec![
                    Value::Int(next_refund),
                    Value::Int(order_id),
                    cents(amount),
                    Value::Date(add_days(d, delay)),
                ]);
                next_refund += 1;
            }

            let row = vec![
                Value::Int(order_id),
                Value::Int(customer_id),
                Value::Timestamp(ts),
                Value::Date(d),
                Value::Text(status.into()),
                cents(gross),
                Value::Text(currency.into()),
            ];
            if Some(idx) == dup_at {
                orders.push(row.clone());
                bad.duplicated_orders.push(order_id);
            }
            orders.push(row);

            let fact = |net: i64| {
                vec![
                    Value::Int(order_id),
                    Value::Date(d),
                    Value::Int(customer_id),
                    cents(gross),
                    cents(refunded),
                    cents(net),
                ]
            };
            revenue.push(fact(gross));
            revenue_corrected.push(fact(gross - refunded));
        }
        assigned = upto;
    }

    Dataset {
        config: cfg.clone(),
        end,
        orders,
        refunds,
        revenue,
        revenue_corrected,
        bad,
        orders_per_day,
        dst_days,
        month_ends,
        price_change,
        high_value_customers,
    }
}
