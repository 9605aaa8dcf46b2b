//! `eye`: runs The Eye on one machine and operates it.

mod aws;
mod bench;
mod cost;
mod query;
mod serve;
mod server;
mod slots;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use eye_shared::adapters::aws::sqs::SqsDeadLetters;
use eye_shared::adapters::sqlite::{Sqlite, SqliteConfig};
use eye_shared::ports::{DeadLetters, Reach, Scope};

#[derive(Parser)]
#[command(
    name = "eye",
    version,
    about = "The Eye: collect user-behaviour events, keep them for analysts"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EYE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, the processor and the query API in one process.
    Serve(serve::ServeArgs),
    /// Create the queue, dead-letter queue and tables (as template.yaml defines
    /// them), or the SQLite file. Safe to run again.
    Bootstrap(BootstrapArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print events as JSON lines: one session, or a category and/or time
    /// range, or with neither every event, by time (on AWS, a query without
    /// --category needs --from).
    Events(query::EventsArgs),
    /// Print error records (refused events) as JSON lines.
    Errors(query::ErrorsArgs),
    /// Inspect and replay dead letters: queue messages that failed too often.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Load-test an endpoint (eye serve, API Gateway or another implementation
    /// of the contract) and report throughput, latency and lag.
    Bench(bench::BenchArgs),
    /// Estimate the monthly AWS bill for an event rate, at list prices.
    Cost(cost::CostArgs),
}

/// Which backend a command works on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The embedded SQLite file (`--db`).
    #[default]
    Sqlite,
    /// SQS and DynamoDB (`--endpoint-url`, `--prefix`).
    Aws,
}

/// The backend choice shared by commands.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// sqlite: everything in one file. aws: SQS + DynamoDB (real AWS or an emulator).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite, env = "EYE_BACKEND")]
    pub backend: Backend,
    #[command(flatten)]
    pub aws: aws::AwsArgs,
}

#[derive(Args)]
struct BootstrapArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    db: DbArg,
    /// Queue visibility timeout in seconds (default: as template.yaml).
    #[arg(long)]
    visibility_timeout: Option<u32>,
    /// Receives before a message moves to the DLQ (default: as template.yaml).
    #[arg(long)]
    max_receive_count: Option<u32>,
}

/// Where the embedded database is.
#[derive(Args, Clone)]
pub struct DbArg {
    /// The SQLite database file.
    #[arg(long, default_value = "eye.db", env = "EYE_DB")]
    pub db: PathBuf,
}

impl DbArg {
    /// Opens the database, creating it if needed: for the commands that make
    /// one (`serve`, `bootstrap`, `keys create`).
    pub fn open(&self) -> Result<Sqlite> {
        Sqlite::open(SqliteConfig::new(&self.db))
            .with_context(|| format!("opening {}", self.db.display()))
    }

    /// Opens a database that must exist: every other command reads or
    /// changes one, and never creates a file or a directory.
    pub fn open_existing(&self) -> Result<Sqlite> {
        if !self.db.is_file() {
            bail!(
                "no database at {}; give --db (or EYE_DB), or create it with `eye serve` or `eye keys create`",
                self.db.display()
            );
        }
        self.open()
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; the key itself is printed on the last line, once.
    Create {
        /// The application the key belongs to: stored events carry this name.
        #[arg(long)]
        app: String,
        /// What the key may do; repeat for both. Default: ingest. A query key
        /// reads the events and error records of every application, not only
        /// its own: the analysts are one team across the apps. See
        /// --own-app-only.
        #[arg(long = "scope", value_enum)]
        scopes: Vec<ScopeArg>,
        /// Its queries read only the events and error records of --app, for a
        /// team that must not see other applications' data.
        #[arg(long)]
        own_app_only: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke a key by its id or the key itself.
    Revoke {
        /// The key's id (as listed) or the whole key.
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Ingest,
    Query,
}

/// Most dead letters `eye dlq list` prints.
const DLQ_LIST_MAX: usize = 1000;

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters as JSON lines.
    List {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        db: DbArg,
    },
    /// Move every dead letter back to the queue. Events already stored are not
    /// stored twice.
    Redrive {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        db: DbArg,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How long, once a command is done or has failed, its background work may
/// take to stop before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = runtime.block_on(run(cli.command));
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let _ = writeln!(std::io::stderr(), "eye: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Bootstrap(args) => match args.backend.backend {
            Backend::Aws => {
                aws::run_bootstrap(aws::Bootstrap {
                    aws: args.backend.aws,
                    visibility_timeout: args.visibility_timeout,
                    max_receive_count: args.max_receive_count,
                })
                .await
            }
            Backend::Sqlite => {
                args.db.open()?;
                println!("database ready: {}", args.db.db.display());
                Ok(())
            }
        },
        Command::Keys(cmd) => keys(cmd),
        Command::Events(args) => query::events(args).await,
        Command::Errors(args) => query::errors(args).await,
        Command::Dlq(cmd) => dlq(cmd).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cost(args) => cost::run(args),
    }
}

fn keys(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            app,
            scopes,
            own_app_only,
            db,
        } => {
            let app = app.trim();
            if app.is_empty() || app.len() > 64 || app.chars().any(char::is_control) {
                bail!("--app must be 1 to 64 characters with no control characters");
            }
            let mut scopes: Vec<Scope> = scopes
                .into_iter()
                .map(|s| match s {
                    ScopeArg::Ingest => Scope::Ingest,
                    ScopeArg::Query => Scope::Query,
                })
                .collect();
            if scopes.is_empty() {
                scopes.push(Scope::Ingest);
            }
            scopes.sort();
            scopes.dedup();
            if own_app_only && !scopes.contains(&Scope::Query) {
                bail!(
                    "--own-app-only limits what a key's queries read; give it with --scope query"
                );
            }
            let reach = if own_app_only {
                Reach::OwnApp
            } else {
                Reach::AllApps
            };
            let key = db.open()?.create_key(app, &scopes, reach)?;
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            println!(
                "Created a key for app {app:?} with scope {}.",
                names.join(", ")
            );
            if scopes.contains(&Scope::Query) {
                match reach {
                    Reach::OwnApp => println!("Its queries read only app {app:?}'s data."),
                    Reach::AllApps => println!(
                        "Its queries read every app's data (--own-app-only restricts it to {app:?})."
                    ),
                }
            }
            println!(
                "Send it in the x-api-key header. It is shown only now; The Eye keeps only its hash."
            );
            println!("{key}");
        }
        KeysCommand::List { json, db } => {
            let keys = db.open_existing()?.list_keys()?;
            if json {
                for k in keys {
                    println!("{}", serde_json::to_string(&k)?);
                }
            } else {
                println!(
                    "{:<14} {:<20} {:<14} {:<10} {:<28} REVOKED",
                    "ID", "APP", "SCOPES", "READS", "CREATED"
                );
                for k in keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let reads = match (k.scopes.contains(&Scope::Query), k.own_app_only) {
                        (false, _) => "-",
                        (true, false) => "all apps",
                        (true, true) => "own app",
                    };
                    println!(
                        "{:<14} {:<20} {:<14} {:<10} {:<28} {}",
                        k.id,
                        k.app,
                        scopes.join(","),
                        reads,
                        k.created_at,
                        k.revoked_at.unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        KeysCommand::Revoke { id, db } => {
            if db.open_existing()?.revoke_key(&id)? {
                println!("Revoked {id}. Running servers stop accepting it within 2 seconds.");
            } else {
                bail!("no live key with id {id}; see `eye keys list`");
            }
        }
    }
    Ok(())
}

async fn dlq(cmd: DlqCommand) -> Result<()> {
    let (DlqCommand::List { backend, db } | DlqCommand::Redrive { backend, db }) = &cmd;
    let letters: Box<dyn DeadLetters> = match backend.backend {
        Backend::Sqlite => Box::new(db.open_existing()?),
        Backend::Aws => {
            let aws = aws::Aws::connect(&backend.aws).await;
            Box::new(SqsDeadLetters::new(
                aws.sqs.clone(),
                aws.dlq_url().await?,
                aws.queue_url().await?,
            ))
        }
    };
    match cmd {
        DlqCommand::List { .. } => {
            for letter in letters.list_dead_letters(DLQ_LIST_MAX).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        DlqCommand::Redrive { .. } => {
            let n = letters.redrive_dead_letters().await?;
            println!("Moved {n} dead letter(s) back to the queue.");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    /// Every command's arguments are consistent (clap checks names, conflicts
    /// and defaults only when asked, or when a command runs).
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `eye serve` (clap) and the processor Lambda (`config::flag`) read
    /// `EYE_STRICT_TYPES` the same way. The only test here that sets the
    /// environment, so nothing reads it meanwhile.
    #[test]
    fn strict_types_from_the_environment_means_the_same_to_clap_and_the_lambda() {
        for value in ["true", "false", "1", "0", "yes", "no", "off", "on", "TRUE"] {
            // SAFETY: no other test of this binary reads or writes the environment.
            unsafe { std::env::set_var("EYE_STRICT_TYPES", value) };
            let cli = Cli::try_parse_from(["eye", "serve"]).expect("parses");
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            assert_eq!(
                args.processing.strict_types,
                eye_shared::config::flag(value),
                "EYE_STRICT_TYPES={value}"
            );
        }
        // SAFETY: as above.
        unsafe { std::env::remove_var("EYE_STRICT_TYPES") };
    }
}
