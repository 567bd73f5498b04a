//! The `docproc` binary: one executable for the broker, and (in later
//! releases) the processing server and its workers.

mod broker_cmd;

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
    /// Run the durable priority broker over gRPC.
    Broker(broker_cmd::BrokerArgs),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => broker_cmd::run(args).await,
        }
    })
}
