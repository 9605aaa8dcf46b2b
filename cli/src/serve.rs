//! `eye serve`: the HTTP API (axum), the processor worker and the query API in
//! one process, over the embedded SQLite backend.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

use crate::server::{self, ConnectionLimits};
use crate::slots::Slots;
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
    /// Requests one key may have in flight; more get 503.
    #[arg(long, default_value_t = config::MAX_IN_FLIGHT_PER_KEY, env = "EYE_MAX_IN_FLIGHT_PER_KEY")]
    pub max_in_flight_per_key: usize,
    /// Requests in flight whose key is in the body (Segment's writeKey), a
    /// pool of their own; more get 503.
    #[arg(long, default_value_t = config::MAX_IN_FLIGHT_KEY_IN_BODY, env = "EYE_MAX_IN_FLIGHT_KEY_IN_BODY")]
    pub max_in_flight_key_in_body: usize,
    /// Open connections; a new one past this is closed at once.
    #[arg(long, default_value_t = config::MAX_CONNECTIONS, env = "EYE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Open connections from one address.
    #[arg(long, default_value_t = config::MAX_CONNECTIONS_PER_ADDRESS, env = "EYE_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: usize,
    /// Seconds to send a request's headers; also how long an idle kept-alive
    /// connection stays open.
    #[arg(long, default_value_t = config::HEADER_TIMEOUT.as_secs(), env = "EYE_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: u64,
    /// Seconds to send a whole request body; then 408 and the connection closes.
    #[arg(long, default_value_t = config::BODY_TIMEOUT.as_secs(), env = "EYE_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: u64,
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
        if let (Some(dir), true) = (&self.schemas, types.is_empty()) {
            tracing::warn!(
                dir = %dir.display(),
                strict_types = self.strict_types,
                "no schemas in {}: no payload is validated{}; put one <category>/<name> JSON Schema per *.json file there",
                dir.display(),
                if self.strict_types { ", and --strict-types refuses every event" } else { "" }
            );
        }
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
    // Listen before anything else starts, so "the port is taken" is the first
    // and only thing a user hears of a failed start.
    let listener = bind(args.listen).await?;
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
        // Not eprintln!, which panics when stderr is closed.
        let _ = writeln!(
            std::io::stderr(),
            "No API keys yet. Create one in another terminal:\n  eye keys create --app my-app --scope ingest --scope query --db {}",
            args.db.db.display()
        );
    }

    tracing::info!(
        address = %listener.local_addr()?,
        db = %args.db.db.display(),
        "The Eye is listening; API docs at http://{}/",
        listener.local_addr()?
    );
    let request_limits = RequestLimits {
        max_in_flight: args.max_in_flight,
        max_in_flight_per_key: args.max_in_flight_per_key,
        max_in_flight_key_in_body: args.max_in_flight_key_in_body,
        body_timeout: Duration::from_secs(args.body_timeout_secs),
    };
    let connection_limits = ConnectionLimits {
        max_connections: args.max_connections,
        max_per_address: args.max_connections_per_address,
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        shutdown_grace: config::SHUTDOWN_GRACE,
    };
    server::serve(
        listener,
        router(api, request_limits),
        connection_limits,
        shutdown_signal(),
    )
    .await;
    tracing::info!("stopping: in-flight requests are answered, the worker finishes its batch");
    let _ = stop_tx.send(true);
    worker.await?;
    Ok(())
}

/// Binds the listening socket, with an error that says what to do.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process is listening there; stop it, or choose another --listen"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "that address is not on this machine; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; choose a port from 1024 up"
            }
            _ => "check --listen",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}; {hint}")
    })
}

/// What the request path needs besides the API.
struct ServerState {
    api: Api,
    in_flight: Semaphore,
    key_in_body: Semaphore,
    per_key: Slots<String>,
    body_timeout: Duration,
}

/// The request limits of the local server.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Requests in flight in all.
    pub max_in_flight: usize,
    /// Requests in flight per key.
    pub max_in_flight_per_key: usize,
    /// Requests in flight whose key is in the body.
    pub max_in_flight_key_in_body: usize,
    /// Time to send a whole body.
    pub body_timeout: Duration,
}

/// The axum side: every request goes to [`Api::admit`], then, within the
/// request limits, to [`Api::handle_admitted`].
pub fn router(api: Api, limits: RequestLimits) -> Router {
    let state = Arc::new(ServerState {
        api,
        in_flight: Semaphore::new(limits.max_in_flight),
        key_in_body: Semaphore::new(limits.max_in_flight_key_in_body),
        per_key: Slots::new(limits.max_in_flight_per_key),
        body_timeout: limits.body_timeout,
    });
    Router::new().fallback(handle).with_state(state)
}

fn busy(message: String) -> Response {
    let retry = config::RETRY_AFTER_SECS;
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        .with_retry_after(retry)
        .into_response()
        .map(Body::from)
}

async fn handle(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Cheap checks first: the route and the key, from the head alone. A
    // request without a valid key takes no slot and is not read further.
    let admitted = match state.api.admit(&parts).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.map(Body::from),
    };
    let retry = config::RETRY_AFTER_SECS;
    let _key_slot = match admitted.principal() {
        Some(p) => match state.per_key.try_acquire(&p.key_id) {
            Some(slot) => Some(slot),
            None => {
                return busy(format!(
                    "key {} (app {:?}) has {} requests in flight, its limit; retry after {retry}s",
                    p.key_id,
                    p.app,
                    state.per_key.max()
                ));
            }
        },
        None => None,
    };
    // A request whose key is in its body takes a slot of a smaller pool of
    // its own, not one of the server's.
    let pool = if admitted.key_in_body() {
        &state.key_in_body
    } else {
        &state.in_flight
    };
    let Ok(_permit) = pool.try_acquire() else {
        return busy(format!(
            "the server is at its limit of requests in flight; retry after {retry}s"
        ));
    };
    let max = state.api.limits().max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return state.api.payload_too_large().map(Body::from);
    }
    let read = tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, max)).await;
    let bytes: Bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<LengthLimitError>().is_some())
                || e.to_string().contains("length limit");
            if too_large {
                return state.api.payload_too_large().map(Body::from);
            }
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body could not be read: {e}"),
            )
            .into_response()
            .map(Body::from);
        }
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}s; nothing was accepted, send it again",
                    state.body_timeout.as_secs()
                ),
            )
            .into_response()
            .map(Body::from);
            r.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return r;
        }
    };
    state
        .api
        .handle_admitted(admitted, http::Request::from_parts(parts, bytes))
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
