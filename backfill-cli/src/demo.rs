//! A sample database to try the runbook on: a shop whose revenue model
//! stopped joining refunds for six months (`backfill demo`).

use std::path::Path;

use backfill_core::{Error, Result};
use backfill_duckdb::DuckDbWarehouse;

/// The corrected logic of the refunds fix: refunds joined on the order,
/// summed per order. Portable SQL (DuckDB and PostgreSQL).
pub const CORRECTED: &str = "
    SELECT o.order_id, o.order_date, o.customer_id, o.gross,
           CAST(coalesce(r.refunds, 0) AS DECIMAL(18,2)) AS refunds,
           CAST(o.gross - coalesce(r.refunds, 0) AS DECIMAL(18,2)) AS net
    FROM shop.orders AS o
    LEFT JOIN (SELECT order_id, sum(amount) AS refunds FROM shop.refunds GROUP BY order_id) AS r
      USING (order_id)";

/// The SQL that creates the shop's raw data and the buggy revenue fact
/// on DuckDB: `orders` orders over the year from 2025-07-01, with
/// weekends, month-ends and a DST change; refunds on about 5% of them;
/// and `analytics.revenue` whose 2026 rows ignore refunds.
pub fn refunds_sql(orders: u64) -> String {
    let per_day = (orders / 365).max(1);
    format!(
        "
        CREATE SCHEMA shop;
        CREATE SCHEMA analytics;
        CREATE TABLE shop.orders AS
        WITH days AS (
            SELECT DATE '2025-07-01' + CAST(range AS INTEGER) AS d FROM range(365)
        ), sized AS (
            SELECT d, CAST({per_day}
                * CASE WHEN dayofweek(d) IN (0, 6) THEN 0.7 ELSE 1.05 END
                * CASE WHEN d = last_day(d) THEN 1.6 ELSE 1.0 END AS BIGINT) AS n
            FROM days
        )
        SELECT CAST(row_number() OVER (ORDER BY d, k) AS BIGINT) AS order_id,
               d AS order_date,
               CAST(CASE WHEN k % 997 = 0 THEN 1 + k % 7
                         ELSE 100 + hash(d, k) % 60000 END AS BIGINT) AS customer_id,
               CAST(round(CASE WHEN k % 997 = 0 THEN 2500 + hash(k, d) % 5000
                               ELSE 5 + (hash(k, d, 1) % 20000) / 100.0 END
                          * CASE WHEN d >= DATE '2026-04-01' THEN 1.05 ELSE 1.0 END, 2)
                    AS DECIMAL(18,2)) AS gross
        FROM sized, range(n) AS r(k);
        CREATE TABLE shop.refunds AS
        SELECT order_id,
               CAST(round(gross * (30 + hash(order_id, 7) % 71) / 100.0, 2) AS DECIMAL(18,2)) AS amount,
               order_date + CAST(hash(order_id, 3) % 20 AS INTEGER) AS refund_date
        FROM shop.orders
        WHERE hash(order_id, 5) % 100 < 5;
        CREATE TABLE analytics.revenue AS
        SELECT * FROM ({CORRECTED}) AS c WHERE order_date < DATE '2026-01-01'
        UNION ALL
        SELECT order_id, order_date, customer_id, gross,
               CAST(0 AS DECIMAL(18,2)) AS refunds, gross AS net
        FROM shop.orders WHERE order_date >= DATE '2026-01-01'
        ORDER BY order_date, order_id;
        "
    )
}

/// Creates a new DuckDB file holding the refunds dataset; refuses a path
/// where a file already is.
pub async fn create_refunds(path: &Path, orders: u64) -> Result<DuckDbWarehouse> {
    if path.exists() {
        return Err(Error::NotAllowed(format!(
            "{} exists; the demo creates a new database",
            path.display()
        )));
    }
    let wh = DuckDbWarehouse::open(path)?;
    wh.execute_batch(refunds_sql(orders)).await?;
    Ok(wh)
}
