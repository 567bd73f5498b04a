//! The `docproc` binary: the processing server, its workers, and the broker.

mod broker_cmd;
mod notify_args;
mod serve_cmd;

use clap::{Parser, Subcommand};

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
    /// Extract one file (run by the server in a sandboxed child process).
    #[command(hide = true)]
    Extract(serve_cmd::ExtractArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Command::Extract(args) = cli.command {
        // No runtime, no threads: a parser crash takes down only this process.
        std::process::exit(serve_cmd::extract(args));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve_cmd::serve(args).await,
            Command::Worker(args) => serve_cmd::worker(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Extract(_) => Ok(()),
        }
    })
}
