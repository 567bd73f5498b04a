//! The `docproc` binary: the processing server, its workers, and the broker.

mod broker_cmd;
mod cli_settings;
mod client_cmd;
mod health_cmd;
mod serve_cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the broker's consume path allocates
/// per message; glibc's malloc and free took 23 % of its samples, and
/// mimalloc raised consume + ack 42–69 % (README, "The consume path beside
/// Redis Streams"). The extractor child runs without mimalloc's arena
/// reservation so its address-space limit holds (`sandbox`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// docproc: a durable job broker and document-processing server.
#[derive(Debug, Parser)]
#[command(name = "docproc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the processing server: HTTP API, worker pools, embedded queue.
    Serve(serve_cmd::ServeArgs),
    /// Run worker pools alone against a queue (e.g. grpc:// to a broker).
    Worker(serve_cmd::WorkerArgs),
    /// Run the durable priority broker over gRPC.
    Broker(broker_cmd::BrokerArgs),
    /// Upload a document; with --wait, follow it to the end.
    Submit(client_cmd::SubmitArgs),
    /// Show a job's status.
    Status(client_cmd::JobArgs),
    /// Cancel a job.
    Cancel(client_cmd::JobArgs),
    /// Queue depth and counters per job type.
    Stats(client_cmd::StatsArgs),
    /// List failed (dead) jobs.
    Dead(client_cmd::DeadArgs),
    /// Probe a running server, worker or broker (for container health
    /// checks): exit 0 when it serves.
    Health(health_cmd::HealthArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Extract one file (run by the server in a sandboxed child process).
    #[command(hide = true)]
    Extract(serve_cmd::ExtractArgs),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Make a new random API key; prints the key (give it to the client)
    /// and its configuration entry (put it in auth.keys / DOCPROC_API_KEYS).
    New {
        /// Name shown in logs and metrics.
        #[arg(long)]
        name: String,
        /// read, worker, write or admin.
        #[arg(long, default_value = "write")]
        scope: String,
    },
}

fn new_key(name: &str, scope: &str) -> anyhow::Result<()> {
    use docproc_broker::auth::{generate, Scope};
    let scope: Scope = scope.parse().map_err(anyhow::Error::msg)?;
    let (key, entry) = generate(name, scope).map_err(anyhow::Error::msg)?;
    println!("key:    {key}");
    println!("entry:  {}", entry.entry());
    eprintln!("The key is shown once; only the entry (its hash) goes into the configuration.");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version to stdout with 0; usage errors with their own
        // code, so that a wrongly run extractor never reads as a bad file.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(docproc_server::sandbox::EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Extract(args) => {
            // No runtime, no threads: a parser crash takes down only this process.
            cli_settings::init_logging(false, "info");
            std::process::exit(serve_cmd::extract(args));
        }
        Command::Key(KeyCommand::New { name, scope }) => return new_key(&name, &scope),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve_cmd::serve(args).await,
            Command::Worker(args) => serve_cmd::worker(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Submit(a) => client_cmd::submit(a).await,
            Command::Status(a) => client_cmd::status(a).await,
            Command::Cancel(a) => client_cmd::cancel(a).await,
            Command::Stats(a) => client_cmd::stats(a).await,
            Command::Dead(a) => client_cmd::dead(a).await,
            Command::Health(a) => health_cmd::run(a).await,
            Command::Extract(_) | Command::Key(_) => Ok(()),
        }
    })
}
