//! `eye events` and `eye errors`: queries for analysts and operators, printed as
//! JSON lines (one event or error record per line, ready for `jq`).

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use eye_shared::domain::{ErrorCode, Timestamp};
use eye_shared::ports::{ErrorFilter, ErrorQuery, EventFilter, EventQuery, Page, PageRequest};
use serde::Serialize;

use crate::{Backend, BackendArgs, DbArg};

#[derive(Args)]
pub struct EventsArgs {
    /// One session's events, in order.
    #[arg(long, conflicts_with_all = ["category", "from", "to"])]
    pub session: Option<String>,
    /// Events of this category. Without it, --from and --to: events of every
    /// category (on AWS, --from is then needed); without any of them, every event.
    #[arg(long)]
    pub category: Option<String>,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Args)]
pub struct ErrorsArgs {
    /// Only this code (timestamp_in_future, payload_invalid, unknown_event_type, invalid_event).
    #[arg(long)]
    pub code: Option<String>,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// A time range and how much to print: of `timestamp` for events, of
/// `received_at` for error records.
#[derive(Args)]
pub struct RangeArgs {
    /// From this time, inclusive.
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time, exclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// Print at most this many.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl RangeArgs {
    fn times(&self) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
        Ok((
            parse_time("from", self.from.as_ref())?,
            parse_time("to", self.to.as_ref())?,
        ))
    }
}

/// The query side of the chosen backend.
async fn stores(
    backend: &BackendArgs,
    db: &DbArg,
) -> Result<(Arc<dyn EventQuery>, Arc<dyn ErrorQuery>)> {
    Ok(match backend.backend {
        Backend::Sqlite => {
            let db = db.open_existing()?;
            (Arc::new(db.clone()), Arc::new(db))
        }
        Backend::Aws => {
            let store = crate::aws::Aws::connect(&backend.aws).await.store();
            (Arc::new(store.clone()), Arc::new(store))
        }
    })
}

pub fn parse_time(flag: &str, value: Option<&String>) -> Result<Option<Timestamp>> {
    value
        .map(|v| Timestamp::parse(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

/// The filter of `eye events` without `--session`: a category, a time range,
/// both, or neither (every event, by time).
pub fn event_filter(args: &EventsArgs) -> Result<EventFilter> {
    let (from, to) = args.range.times()?;
    let filter = EventFilter::new(args.category.clone(), from, to)?;
    warn_if_reversed(filter.reversed_range());
    Ok(filter)
}

/// `--from` after `--to` is a valid, empty range: nothing is printed, so say why.
fn warn_if_reversed(warning: Option<String>) {
    if let Some(warning) = warning {
        eprintln!("warning: {warning} (--from, --to)");
    }
}

pub fn error_filter(args: &ErrorsArgs) -> Result<ErrorFilter> {
    let code = match &args.code {
        Some(c) => {
            Some(ErrorCode::parse(c).ok_or_else(|| anyhow::anyhow!("unknown error code {c:?}"))?)
        }
        None => None,
    };
    let (from, to) = args.range.times()?;
    let filter = ErrorFilter::new(code, from, to)?;
    warn_if_reversed(filter.reversed_range());
    Ok(filter)
}

/// Prints every page as JSON lines, up to `limit` items.
pub async fn print_pages<T, F, Fut>(limit: Option<usize>, mut fetch: F) -> Result<usize>
where
    T: Serialize,
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, eye_shared::ports::BackendError>>,
{
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0;
    let mut after = None;
    loop {
        let want = limit.map_or(1000, |l| (l - printed).min(1000));
        if want == 0 {
            break;
        }
        let page = fetch(PageRequest { limit: want, after }).await?;
        for item in &page.items {
            serde_json::to_writer(&mut out, item)?;
            out.write_all(b"\n")?;
        }
        printed += page.items.len();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(printed)
}

pub async fn events(args: EventsArgs) -> Result<()> {
    let (events, _) = stores(&args.backend, &args.db).await?;
    match &args.session {
        Some(session) => {
            print_pages(args.range.limit, |page| {
                events.session_events(session, None, page)
            })
            .await?
        }
        None => {
            let filter = event_filter(&args)?;
            print_pages(args.range.limit, |page| {
                let events = events.clone();
                let filter = filter.clone();
                async move { events.find_events(&filter, page).await }
            })
            .await?
        }
    };
    Ok(())
}

pub async fn errors(args: ErrorsArgs) -> Result<()> {
    let (_, errors) = stores(&args.backend, &args.db).await?;
    let filter = error_filter(&args)?;
    print_pages(args.range.limit, |page| {
        let errors = errors.clone();
        let filter = filter.clone();
        async move { errors.find_errors(&filter, page).await }
    })
    .await?;
    Ok(())
}
