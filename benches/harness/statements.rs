//! Counts the statements and transactions the adapters run, from their
//! trace events, without changing what they do: statements in all, those
//! on the ledger's tables, transactions, and statements by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// What ran while counting.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Statements (each one a round trip to the engine).
    pub statements: u64,
    /// Of them, statements on the ledger's tables.
    pub ledger: u64,
    /// Transactions begun.
    pub transactions: u64,
    /// Statements by their first words.
    pub kinds: BTreeMap<String, u64>,
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static SHOW: AtomicBool = AtomicBool::new(false);

/// Also prints the first statement of each kind while counting.
pub fn show_statements(on: bool) {
    SHOW.store(on, Ordering::SeqCst);
}
static COUNTS: Mutex<Option<Counts>> = Mutex::new(None);

/// Installs the counter as the global subscriber (once).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(Counter);
}

/// Starts counting from zero; `ledger` is the ledger's schema.
pub fn start(ledger: &str) {
    *COUNTS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Counts::default());
    *LEDGER.lock().unwrap_or_else(|e| e.into_inner()) = ledger.to_string();
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting and returns the counts.
pub fn stop() -> Counts {
    COUNTING.store(false, Ordering::SeqCst);
    COUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default()
}

static LEDGER: Mutex<String> = Mutex::new(String::new());

struct Counter;

fn ours(m: &Metadata<'_>) -> bool {
    m.is_event()
        && (m.target().starts_with("backfill_duckdb")
            || m.target().starts_with("backfill_postgres"))
}

#[derive(Default)]
struct Fields {
    message: String,
    sql: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "sql" => self.sql = format!("{value:?}"),
            _ => {}
        }
    }
}

/// The first words of a statement up to its first name, and the last
/// part of that name (the table, without its schema).
fn kind(sql: &str) -> String {
    let mut words = Vec::new();
    for w in sql.split_whitespace().take(6) {
        if w.starts_with('"') {
            words.push(
                w.rsplit('.')
                    .next()
                    .unwrap_or(w)
                    .trim_matches(|c| c == '"' || c == '('),
            );
            break;
        }
        words.push(w);
    }
    words.join(" ")
}

impl Subscriber for Counter {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if ours(m) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, m: &Metadata<'_>) -> bool {
        ours(m) && COUNTING.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, e: &Event<'_>) {
        let mut f = Fields::default();
        e.record(&mut f);
        let ledger = LEDGER.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut g = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = g.as_mut() else { return };
        match f.message.as_str() {
            "begin" => c.transactions += 1,
            "execute" | "query" | "describe query" => {
                c.statements += 1;
                let on_ledger = !ledger.is_empty() && f.sql.contains(&ledger);
                if on_ledger {
                    c.ledger += 1;
                }
                let k = format!(
                    "{}{}",
                    if on_ledger { "ledger: " } else { "" },
                    kind(&f.sql)
                );
                let n = c.kinds.entry(k).or_default();
                if *n == 0 && SHOW.load(Ordering::Relaxed) {
                    eprintln!("{};", f.sql);
                }
                *n += 1;
            }
            _ => {}
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
