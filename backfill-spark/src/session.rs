//! One Spark Connect session: statements in, numbers and bounded rows out.

use std::fmt;
use std::sync::Arc;

use backfill_core::sql::{spark, Dialect, SparkDialect, Sql};
use backfill_core::{ColumnType, Error, Result, TableRef, Value};
use spark_connect_core::{ChannelBuilder, SparkConnectClient, SparkError};
use spark_connect_proto as pb;

use crate::decode;

/// The dialect every statement is rendered in.
pub static DIALECT: SparkDialect = SparkDialect;

/// The client name servers log with each request.
const CLIENT_TYPE: &str = "backfill";

/// A Spark Connect session. Cheap to clone: clones share the connection and
/// the session, and may run statements at the same time.
///
/// Statements are rendered by the shared renderer in [`SparkDialect`],
/// which writes every value as a literal (Spark Connect servers do not all
/// bind parameters), so [`Sql::params`] travel only for reports.
#[derive(Clone)]
pub struct Spark {
    client: Arc<SparkConnectClient>,
    url: Arc<str>,
    /// Held by whoever uses the session's temporary views (see
    /// [`Spark::hold`]); shared by every clone.
    held: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Spark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spark")
            .field("url", &self.url)
            .field("session", &self.client.session_id())
            .finish()
    }
}

impl Spark {
    /// Opens a session on a Spark Connect server, for example
    /// `sc://127.0.0.1:15002` (the URL may carry `;token=…`, `;use_ssl=true`
    /// and the other parameters of the Spark Connect URL), and checks that
    /// the server answers a query.
    ///
    /// ```no_run
    /// # async fn demo() -> backfill_core::Result<()> {
    /// use backfill_core::sql::SqlBuilder;
    /// use backfill_core::{TableRef, Value};
    /// use backfill_spark::Spark;
    ///
    /// let spark = Spark::connect("sc://127.0.0.1:15002").await?;
    /// let mut q = SqlBuilder::new(spark.dialect());
    /// q.push("SELECT count(*) FROM ")
    ///     .table(&TableRef::parse("analytics.revenue")?)
    ///     .push(" WHERE region = ")
    ///     .param(Value::Text("it's north".into())); // a literal of hex digits
    /// let rows = spark.query(&q.finish()).await?;
    /// # let _ = rows; Ok(()) }
    /// ```
    ///
    /// A server that refuses the connection for the moment (gRPC
    /// `UNAVAILABLE`: its accept queue full, say) is tried again, five
    /// times over about three seconds, before the error is returned.
    pub async fn connect(url: &str) -> Result<Spark> {
        let mut wait = std::time::Duration::from_millis(100);
        for _ in 0..5 {
            match Self::connect_once(url).await {
                Err(e) if unavailable(&e) => {
                    tracing::debug!(url, error = %e, "Spark Connect server unavailable; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        Self::connect_once(url).await
    }

    async fn connect_once(url: &str) -> Result<Spark> {
        let builder = ChannelBuilder::parse(url).map_err(spark_error)?;
        let client = SparkConnectClient::connect(&builder)
            .await
            .map_err(spark_error)?;
        let spark = Spark {
            client: Arc::new(client),
            url: url.into(),
            held: Arc::default(),
        };
        spark
            .query(&Sql {
                text: "SELECT 1".into(),
                params: Vec::new(),
            })
            .await?;
        Ok(spark)
    }

    /// Holds this session for one user of its temporary views at a time:
    /// every handle on it (a clone of this one) waits for the guard.
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.held.clone().lock_owned().await
    }

    /// The session's id on the server.
    pub fn session_id(&self) -> &str {
        self.client.session_id()
    }

    /// The dialect statements for this session are rendered in.
    pub fn dialect(&self) -> &'static dyn Dialect {
        &DIALECT
    }

    fn user(&self) -> pb::UserContext {
        pb::UserContext {
            user_id: self.client.user_id().unwrap_or_default().to_string(),
            ..Default::default()
        }
    }

    /// Sends `plan` and returns every response of its stream.
    async fn run(&self, plan: pb::Plan) -> Result<Vec<pb::ExecutePlanResponse>> {
        let request = pb::ExecutePlanRequest {
            session_id: self.client.session_id().to_string(),
            user_context: Some(self.user()),
            operation_id: Some(uuid::Uuid::new_v4().to_string()),
            client_type: Some(CLIENT_TYPE.into()),
            plan: Some(plan),
            ..Default::default()
        };
        let mut stream = self
            .client
            .execute_plan(request)
            .await
            .map_err(spark_error)?;
        let mut out = Vec::new();
        while let Some(r) = stream
            .message()
            .await
            .map_err(|s| spark_error(SparkError::from_grpc_status(s)))?
        {
            out.push(r);
        }
        Ok(out)
    }

    /// Runs a statement now, as `spark.sql` runs a command.
    ///
    /// It says nothing of the rows it changed: servers do not agree on
    /// what a command reports (Sail's `DELETE` reports the rows it wrote
    /// back, Apache Spark's parquet `INSERT` nothing), so whoever needs a
    /// count asks for one with a query.
    pub async fn execute(&self, sql: &Sql) -> Result<()> {
        tracing::trace!(sql = %sql.text, "spark execute");
        let command = pb::Command {
            command_type: Some(pb::command::CommandType::SqlCommand(pb::SqlCommand {
                input: Some(sql_relation(&sql.text)),
                ..Default::default()
            })),
        };
        self.run(pb::Plan {
            op_type: Some(pb::plan::OpType::Command(command)),
        })
        .await?;
        Ok(())
    }

    /// Runs a query and returns its rows, decoded as [`Value`]s: integers
    /// as [`Value::Int`], floats as [`Value::Float`], exact decimals as
    /// [`Value::Text`], dates, wall-clock times and instants by their types.
    /// Only numbers and bounded samples are ever asked for this way.
    pub async fn query(&self, sql: &Sql) -> Result<Vec<Vec<Value>>> {
        tracing::trace!(sql = %sql.text, "spark query");
        let batches = self.collect(sql_relation(&sql.text)).await?;
        decode::batches(batches)
    }

    /// The result columns of a query, `(name, type, nullable)`, from the
    /// server's analysis of it: nothing is run. A table or view it reads
    /// that does not exist is [`Error::UnknownTable`], naming it.
    pub async fn columns(&self, sql: &Sql) -> Result<Vec<(String, ColumnType, bool)>> {
        let r = self
            .client
            .analyze_plan(pb::AnalyzePlanRequest {
                session_id: self.client.session_id().to_string(),
                user_context: Some(self.user()),
                client_type: Some(CLIENT_TYPE.into()),
                analyze: Some(pb::analyze_plan_request::Analyze::Schema(
                    pb::analyze_plan_request::Schema {
                        plan: Some(pb::Plan {
                            op_type: Some(pb::plan::OpType::Root(sql_relation(&sql.text))),
                        }),
                    },
                )),
                ..Default::default()
            })
            .await
            .map_err(spark_error)?;
        match r.result {
            Some(pb::analyze_plan_response::Result::Schema(s)) => {
                Ok(decode::struct_fields(s.schema.as_ref()))
            }
            _ => Err(Error::engine(
                "the Spark Connect server did not give a schema",
            )),
        }
    }

    /// What the catalog says of a table or view: its kind and its columns
    /// (with nullability and whether each partitions the table), or `None`
    /// when nothing has the name. Read through Spark Connect's catalog
    /// calls, which every server answers alike, since Spark has no
    /// information schema.
    pub async fn relation(&self, table: &TableRef) -> Result<Option<Relation>> {
        let table_name = table.name.as_str().to_string();
        let db_name = table.schema.as_ref().map(|s| s.as_str().to_string());
        let (_, rows) = self
            .catalog(pb::catalog::CatType::TableExists(pb::TableExists {
                table_name: table_name.clone(),
                db_name: db_name.clone(),
            }))
            .await?;
        if rows.first().and_then(|r| r.first()) != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        let (names, rows) = self
            .catalog(pb::catalog::CatType::GetTable(pb::GetTable {
                table_name: table_name.clone(),
                db_name: db_name.clone(),
            }))
            .await?;
        let kind = match field(&names, rows.first(), "tableType") {
            Some(Value::Text(t))
                if t.eq_ignore_ascii_case("VIEW") || t.eq_ignore_ascii_case("TEMPORARY") =>
            {
                RelationKind::View
            }
            Some(Value::Text(_)) => RelationKind::Table,
            _ => {
                return Err(Error::engine(format!(
                    "the catalog gave no kind for {table}"
                )))
            }
        };
        let (names, rows) = self
            .catalog(pb::catalog::CatType::ListColumns(pb::ListColumns {
                table_name,
                db_name,
            }))
            .await?;
        let mut columns = Vec::with_capacity(rows.len());
        for r in &rows {
            let text = |f: &str| match field(&names, Some(r), f) {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            };
            let flag = |f: &str| field(&names, Some(r), f) == Some(&Value::Bool(true));
            let (Some(name), Some(ty)) = (text("name"), text("dataType")) else {
                return Err(Error::engine(format!(
                    "the catalog listed a column of {table} without its name or type"
                )));
            };
            columns.push(CatalogColumn {
                name,
                ty: spark::column_type(&ty),
                nullable: flag("nullable"),
                partition: flag("isPartition"),
            });
        }
        Ok(Some(Relation { kind, columns }))
    }

    async fn catalog(&self, call: pb::catalog::CatType) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let relation = pb::Relation {
            common: None,
            rel_type: Some(pb::relation::RelType::Catalog(pb::Catalog {
                cat_type: Some(call),
            })),
        };
        decode::named(self.collect(relation).await?)
    }

    async fn collect(
        &self,
        relation: pb::Relation,
    ) -> Result<Vec<spark_arrow::array::RecordBatch>> {
        let mut out = Vec::new();
        for r in self
            .run(pb::Plan {
                op_type: Some(pb::plan::OpType::Root(relation)),
            })
            .await?
        {
            if let Some(pb::execute_plan_response::ResponseType::ArrowBatch(b)) = r.response_type {
                out.extend(decode::arrow_ipc(&b.data)?);
            }
        }
        Ok(out)
    }

    /// Sets a setting of this session (`spark.conf.set`), for example
    /// `spark.sql.warehouse.dir`.
    pub async fn set_config(&self, key: &str, value: &str) -> Result<()> {
        self.client
            .set_config(key, value)
            .await
            .map_err(spark_error)
    }

    /// Ends the session on the server (its temporary views and settings).
    pub async fn close(&self) -> Result<()> {
        self.client.release_session().await.map_err(spark_error)
    }
}

/// A table or a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationKind {
    /// A table (managed or external).
    Table,
    /// A view (or a temporary view).
    View,
}

/// A column as the catalog lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it may hold NULL.
    pub nullable: bool,
    /// Whether the table is partitioned by it.
    pub partition: bool,
}

/// What the catalog says of a relation ([`Spark::relation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// A table or a view.
    pub kind: RelationKind,
    /// Its columns, in order.
    pub columns: Vec<CatalogColumn>,
}

/// The value of the column named `name` in `row`.
fn field<'r>(names: &[String], row: Option<&'r Vec<Value>>, name: &str) -> Option<&'r Value> {
    let i = names.iter().position(|n| n == name)?;
    row?.get(i)
}

fn sql_relation(text: &str) -> pb::Relation {
    pb::Relation {
        common: None,
        rel_type: Some(pb::relation::RelType::Sql(pb::Sql {
            query: text.to_string(),
            ..Default::default()
        })),
    }
}

/// Whether a server error says a table or view does not exist.
fn is_missing_relation(e: &SparkError) -> bool {
    e.error_class.contains("TABLE_OR_VIEW_NOT_FOUND")
        || e.message.contains("TABLE_OR_VIEW_NOT_FOUND")
        || e.message.contains("Table or view not found")
}

/// The name of the missing relation an error names: the last part of the
/// first backquoted name (Apache Spark: "The table or view `nope` cannot
/// be found"), else what follows the last colon (Sail: "Table or view not
/// found: nope").
fn missing_name(message: &str) -> String {
    let first_line = message.trim().lines().next().unwrap_or("");
    if let Some(start) = first_line.find('`') {
        let mut parts = Vec::new();
        let mut rest = &first_line[start..];
        while let Some(r) = rest.strip_prefix('`') {
            let Some(end) = r.find('`') else { break };
            parts.push(&r[..end]);
            rest = &r[end + 1..];
            match rest.strip_prefix('.') {
                Some(r) => rest = r,
                None => break,
            }
        }
        if let Some(last) = parts.last() {
            return (*last).to_string();
        }
    }
    first_line
        .rsplit(": ")
        .next()
        .unwrap_or(first_line)
        .trim()
        .to_string()
}

/// Whether `e` is the server refusing for the moment (gRPC `UNAVAILABLE`).
fn unavailable(e: &Error) -> bool {
    matches!(
        e,
        Error::Engine {
            transient: true,
            ..
        }
    )
}

/// A Spark Connect error as an engine error: the server's error class as
/// its code; a server that is unreachable or shutting down is transient.
pub(crate) fn spark_error(e: SparkError) -> Error {
    if is_missing_relation(&e) {
        return Error::UnknownTable(missing_name(&e.message));
    }
    // gRPC UNAVAILABLE (14): the server is down or restarting.
    let transient = e.grpc_code == Some(14);
    let code = (!e.error_class.is_empty()).then(|| e.error_class.clone());
    let message = if e.message.is_empty() {
        e.to_string()
    } else {
        e.message.clone()
    };
    Error::from_driver(message, transient, code, e)
}

#[cfg(test)]
mod tests {
    use super::missing_name;

    #[test]
    fn the_missing_relation_is_named() {
        assert_eq!(
            missing_name("[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found."),
            "nope"
        );
        assert_eq!(
            missing_name("[TABLE_OR_VIEW_NOT_FOUND] The table or view `spark_catalog`.`s`.`nope` cannot be found."),
            "nope"
        );
        assert_eq!(
            missing_name(
                "Table not found: [TABLE_OR_VIEW_NOT_FOUND] Table or view not found: nope"
            ),
            "nope"
        );
    }
}
