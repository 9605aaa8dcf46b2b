//! `eye serve`: the HTTP API (axum), the processor worker and the query API in
//! one process, over the embedded SQLite backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use clap::Args;
use clap::builder::FalseyValueParser;
use eye_shared::adapters::aws::sqs::{SqsPoller, SqsQueue};
use eye_shared::adapters::sqlite::{Sqlite, SqliteConfig};
use eye_shared::api::{Api, ApiError, ApiKeyAuth};
use eye_shared::app::consume::Consumer;
use eye_shared::app::process::Processor;
use eye_shared::config;
use eye_shared::domain::{Rules, SchemaRegistry};
use http::{StatusCode, header};
use http_body_util::LengthLimitError;
use tokio::sync::{Semaphore, watch};

use crate::{Backend, BackendArgs, DbArg};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "EYE_LISTEN")]
    pub listen: SocketAddr,
    /// The SQLite file: the whole backend with `--backend sqlite`, and the API
    /// keys with `--backend aws`.
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub processing: ProcessingArgs,
    /// fsync only at WAL checkpoints (synchronous=NORMAL): survives a crash of
    /// the process, but a power loss may lose the last commits.
    #[arg(long, env = "EYE_NO_FSYNC", value_parser = FalseyValueParser::new())]
    pub no_fsync: bool,
    /// Unprocessed events above which ingest answers 503.
    #[arg(long, default_value_t = config::MAX_BACKLOG_EVENTS, env = "EYE_MAX_BACKLOG")]
    pub max_backlog: u64,
    /// Deliveries of a queue message before it becomes a dead letter.
    #[arg(long, default_value_t = config::MAX_ATTEMPTS, env = "EYE_MAX_ATTEMPTS")]
    pub max_attempts: u32,
    /// Requests handled at once; more get 503 at once.
    #[arg(long, default_value_t = config::MAX_IN_FLIGHT, env = "EYE_MAX_IN_FLIGHT")]
    pub max_in_flight: usize,
}

/// How the processor judges events.
#[derive(Args, Clone)]
pub struct ProcessingArgs {
    /// A directory of JSON Schemas to use instead of the built-in ones.
    #[arg(long, env = "EYE_SCHEMAS")]
    pub schemas: Option<PathBuf>,
    /// Send events of types without a schema to the error records.
    #[arg(long, env = "EYE_STRICT_TYPES", value_parser = FalseyValueParser::new())]
    pub strict_types: bool,
    /// Seconds a timestamp may be ahead of its arrival before it is refused.
    #[arg(long, default_value_t = config::MAX_SKEW_SECS, env = "EYE_MAX_SKEW_SECS")]
    pub max_skew_secs: u32,
}

impl ProcessingArgs {
    pub fn schemas(&self) -> Result<Arc<SchemaRegistry>> {
        let registry = match &self.schemas {
            Some(dir) => SchemaRegistry::from_dir(dir)?,
            None => SchemaRegistry::builtin()?,
        };
        let types: Vec<String> = registry
            .types()
            .iter()
            .map(|(c, n)| format!("{c}/{n}"))
            .collect();
        tracing::info!(types = %types.join(", "), "event schemas loaded");
        Ok(Arc::new(registry))
    }

    pub fn rules(&self) -> Rules {
        Rules {
            max_skew_micros: i64::from(self.max_skew_secs) * 1_000_000,
            strict_types: self.strict_types,
        }
    }
}

/// Queue messages (requests) the embedded consumer takes per batch; it takes
/// at most `RECEIVE_MAX_EVENTS` events whatever this allows.
const CONSUMER_BATCH: usize = 1000;

pub async fn run(args: ServeArgs) -> Result<()> {
    let db = Sqlite::open(SqliteConfig {
        fsync_every_commit: !args.no_fsync,
        max_backlog_events: args.max_backlog,
        max_attempts: args.max_attempts,
        ..SqliteConfig::new(&args.db.db)
    })
    .with_context(|| format!("opening {}", args.db.db.display()))?;
    let auth = Arc::new(ApiKeyAuth(Arc::new(db.clone())));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (api, worker) = match args.backend.backend {
        Backend::Sqlite => {
            let processor = Processor::new(
                Arc::new(db.clone()),
                Arc::new(db.clone()),
                args.processing.schemas()?,
                args.processing.rules(),
            );
            let api = Api::new(auth, Arc::new(db.clone()))
                .with_queries(Arc::new(db.clone()), Arc::new(db.clone()))
                .with_status(Arc::new(db.clone()));
            // The worker judges thousands of events per batch: on a thread of
            // its own it never holds up the threads that answer requests.
            let db = db.clone();
            let worker = tokio::task::spawn_blocking(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(
                        Consumer::new(Arc::new(db), processor, CONSUMER_BATCH).run(stop_rx),
                    ),
                    Err(e) => tracing::error!(error = %e, "the worker could not start"),
                }
            });
            (api, worker)
        }
        Backend::Aws => {
            let aws = crate::aws::Aws::connect(&args.backend.aws).await;
            let (queue_url, dlq_url) = (aws.queue_url().await?, aws.dlq_url().await?);
            let store = Arc::new(aws.store());
            let processor = Processor::new(
                store.clone(),
                store.clone(),
                args.processing.schemas()?,
                args.processing.rules(),
            );
            let queue = SqsQueue::new(aws.sqs.clone(), &queue_url, aws.counts.clone());
            let status = crate::aws::SqsStatus {
                sqs: aws.sqs.clone(),
                queue_url: queue_url.clone(),
                dlq_url,
                counts: aws.counts.clone(),
            };
            let api = Api::new(auth, Arc::new(queue))
                .with_queries(store.clone(), store)
                .with_status(Arc::new(status));
            let poller = SqsPoller::new(aws.sqs.clone(), &queue_url, &aws.region())
                .await?
                .with_counts(aws.counts.clone());
            tracing::info!(
                queue = %queue_url,
                events_table = %aws.resources.events.name,
                errors_table = %aws.resources.errors.name,
                "using SQS and DynamoDB"
            );
            let worker = tokio::spawn(crate::aws::poll_and_process(poller, processor, stop_rx));
            (api, worker)
        }
    };

    if !db.has_keys()? {
        eprintln!(
            "No API keys yet. Create one in another terminal:\n  eye keys create --app my-app --scope ingest --scope query --db {}",
            args.db.db.display()
        );
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        db = %args.db.db.display(),
        "The Eye is listening; API docs at http://{}/",
        listener.local_addr()?
    );
    axum::serve(listener, router(api, args.max_in_flight))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopping: in-flight requests are answered, the worker finishes its batch");
    let _ = stop_tx.send(true);
    worker.await?;
    Ok(())
}

struct ServerState {
    api: Api,
    in_flight: Semaphore,
}

/// The axum side: every request goes to [`Api::handle`].
pub fn router(api: Api, max_in_flight: usize) -> Router {
    let state = Arc::new(ServerState {
        api,
        in_flight: Semaphore::new(max_in_flight),
    });
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    let Ok(_permit) = state.in_flight.try_acquire() else {
        let retry = config::RETRY_AFTER_SECS;
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the server is at its limit of requests in flight; retry after {retry}s"),
        )
        .with_retry_after(retry)
        .into_response()
        .map(Body::from);
    };
    let max = state.api.limits().max_body_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return state
            .api
            .handle_oversized(http::Request::from_parts(parts, ()))
            .await
            .map(Body::from);
    }
    let bytes: Bytes = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<LengthLimitError>().is_some())
                || e.to_string().contains("length limit");
            if too_large {
                return state
                    .api
                    .handle_oversized(http::Request::from_parts(parts, ()))
                    .await
                    .map(Body::from);
            }
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body could not be read: {e}"),
            )
            .into_response()
            .map(Body::from);
        }
    };
    state
        .api
        .handle(http::Request::from_parts(parts, bytes))
        .await
        .map(Body::from)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
