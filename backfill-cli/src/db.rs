//! The connection: a DuckDB file, a PostgreSQL server, or a Spark Connect
//! server with its ledger in PostgreSQL, from `--db` (and `--ledger`).

use std::path::PathBuf;
use std::sync::Arc;

use backfill_core::{Error, Ledger, Result, Warehouse};
use backfill_duckdb::DuckDbWarehouse;
use backfill_postgres::PgWarehouse;
use backfill_spark::SparkWarehouse;

/// Where the data and the ledger live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// A DuckDB file.
    DuckDb(PathBuf),
    /// A PostgreSQL connection string (URL or `key=value` pairs).
    Postgres(String),
    /// A Spark Connect URL, and where its ledger lives (`--ledger`), if
    /// given.
    Spark {
        /// The Spark Connect URL (`sc://…`).
        url: String,
        /// The ledger's PostgreSQL connection string.
        ledger: Option<String>,
    },
}

impl Db {
    /// Reads `--db`: an `sc://` URL is Spark Connect, its ledger at
    /// `ledger`; a `postgres://` or `postgresql://` URL, or text with
    /// `host=` or `dbname=`, is PostgreSQL; anything else is a DuckDB
    /// file.
    pub fn parse(s: &str, ledger: Option<&str>) -> Db {
        if s.starts_with("sc://") {
            return Db::Spark {
                url: s.to_string(),
                ledger: ledger.map(str::to_string),
            };
        }
        let pg = s.starts_with("postgres://")
            || s.starts_with("postgresql://")
            || s.split_whitespace()
                .any(|kv| kv.starts_with("host=") || kv.starts_with("dbname="));
        if pg {
            Db::Postgres(s.to_string())
        } else {
            Db::DuckDb(PathBuf::from(s))
        }
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        match self {
            Db::DuckDb(_) => "duckdb",
            Db::Postgres(_) => "postgres",
            Db::Spark { .. } => "spark",
        }
    }

    /// Spark's ledger connection string, or why there is none.
    fn spark_ledger(ledger: &Option<String>) -> Result<&str> {
        match ledger.as_deref() {
            Some(l) if matches!(Db::parse(l, None), Db::Postgres(_)) => Ok(l),
            Some(l) => Err(Error::Unsupported(format!(
                "--ledger {l} is not a PostgreSQL connection string: a Spark run on the command \
                 line keeps its ledger in PostgreSQL, where other terminals steer and read it"
            ))),
            None => Err(Error::Unsupported(
                "Spark keeps no ledger: pass --ledger (or set BACKFILL_LEDGER) with a \
                 PostgreSQL connection string"
                    .into(),
            )),
        }
    }
}

/// An open warehouse and its ledger.
pub struct Session {
    /// The warehouse.
    pub warehouse: Arc<dyn Warehouse>,
    /// The ledger, in the same database.
    pub ledger: Arc<dyn Ledger>,
}

/// Opening a database: ready, or a DuckDB file that another process holds.
pub enum Opened {
    /// Open.
    Ready(Session),
    /// A DuckDB file locked by another process (a run in flight): reach
    /// it through its control and status files instead.
    Busy(PathBuf),
}

/// Opens `db` with its ledger in `schema`; a DuckDB file must exist.
pub async fn open(db: &Db, schema: &str, pool: usize) -> Result<Opened> {
    match db {
        Db::DuckDb(path) => {
            let wh = match DuckDbWarehouse::open_existing(path) {
                Ok(w) => w,
                Err(e) if held_by_another(&e) => return Ok(Opened::Busy(path.clone())),
                Err(e) => return Err(e),
            };
            let ledger = Arc::new(wh.ledger(schema).await?);
            Ok(Opened::Ready(Session {
                warehouse: Arc::new(wh),
                ledger,
            }))
        }
        Db::Postgres(conn) => {
            let wh = PgWarehouse::connect_with_pool_size(conn, pool).await?;
            let ledger = Arc::new(wh.ledger(schema).await?);
            Ok(Opened::Ready(Session {
                warehouse: Arc::new(wh),
                ledger,
            }))
        }
        Db::Spark { url, ledger } => {
            let conn = Db::spark_ledger(ledger)?;
            let ledger = PgWarehouse::connect_with_pool_size(conn, pool)
                .await?
                .ledger(schema)
                .await?;
            Ok(Opened::Ready(Session {
                warehouse: Arc::new(SparkWarehouse::connect(url).await?),
                ledger: Arc::new(ledger),
            }))
        }
    }
}

/// Opens `db`, or says that another process holds it.
pub async fn open_ready(db: &Db, schema: &str, pool: usize) -> Result<Session> {
    match open(db, schema, pool).await? {
        Opened::Ready(s) => Ok(s),
        Opened::Busy(path) => Err(busy(&path)),
    }
}

/// Whether DuckDB refused the file because another process holds its lock.
fn held_by_another(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

/// Opens only the warehouse, creating no ledger: for commands that write
/// nothing (`plan`, `announce`).
pub async fn open_warehouse(db: &Db) -> Result<Arc<dyn Warehouse>> {
    match db {
        Db::DuckDb(path) => match DuckDbWarehouse::open_existing(path) {
            Ok(w) => Ok(Arc::new(w)),
            Err(e) if held_by_another(&e) => Err(busy(path)),
            Err(e) => Err(e),
        },
        Db::Postgres(conn) => Ok(Arc::new(
            PgWarehouse::connect_with_pool_size(conn, 2).await?,
        )),
        Db::Spark { url, .. } => Ok(Arc::new(SparkWarehouse::connect(url).await?)),
    }
}

fn busy(path: &std::path::Path) -> Error {
    Error::NotAllowed(format!(
        "{} is held by another process (a run in flight); wait for it, or steer it with \
         `backfill pause|resume|cancel` and read it with `backfill status`",
        path.display()
    ))
}
