//! `locus-sample`: the session ledger (see `locus_examples::sample` and
//! `examples/README.md`). A thin wrapper: read flags, build the
//! [`SampleService`], serve it until SIGTERM or Ctrl-C, then shut it down
//! (readiness off, requests in flight finished, changed sessions written
//! back).

use std::process::ExitCode;

use locus_examples::Error;
use locus_examples::args::{Args, env};
use locus_examples::sample::options::{SampleCommand, USAGE, parse_command};
use locus_examples::sample::{SampleConfig, SampleService};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match parse_command(Args::from_env(), env) {
        Ok(SampleCommand::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(SampleCommand::Serve { config, listen }) => match serve(*config, listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "locus-sample failed");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("locus-sample: {error}\n(see locus-sample --help)");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: SampleConfig, listen: std::net::SocketAddr) -> Result<(), Error> {
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Serve)?;
    let service = SampleService::new(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            address: listen,
            source,
        })?;
    tracing::info!(address = %listen, "locus-sample listening");
    let readiness = service.readiness();
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        readiness.shut();
    };
    axum::serve(listener, service.router())
        .with_graceful_shutdown(stop)
        .await
        .map_err(Error::Serve)?;
    let report = service.shutdown().await;
    tracing::info!(
        written = report.flush.written,
        failed = report.flush.failed,
        dropped = report.dropped,
        "locus-sample stopped"
    );
    Ok(())
}
