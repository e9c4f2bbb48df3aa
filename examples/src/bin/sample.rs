//! `locus-sample`: the session ledger (see `locus_examples::sample` and
//! `examples/README.md`). A thin wrapper: read flags, build the
//! [`SampleService`], serve it until SIGTERM or Ctrl-C, then shut it down:
//! with the handoff driver, sessions are handed over (or snapshotted) while
//! the server still serves; then readiness goes off, requests in flight
//! finish and changed sessions are written back.

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
        Ok(SampleCommand::Serve {
            config,
            listen,
            shutdown_timeout,
        }) => match serve(*config, listen, shutdown_timeout).await {
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

async fn serve(
    config: SampleConfig,
    listen: std::net::SocketAddr,
    shutdown_timeout: std::time::Duration,
) -> Result<(), Error> {
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Serve)?;
    let service = SampleService::new(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            address: listen,
            source,
        })?;
    tracing::info!(address = %listen, "locus-sample listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, service.router())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        ended = &mut server => {
            return match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(Error::Serve(error)),
                Err(error) => Err(Error::Serve(std::io::Error::other(error))),
            };
        }
    }
    // Still serving: the sessions go to their next owners (who may ask
    // this pod for them) or into the snapshot.
    let drained = service.drain(shutdown_timeout).await;
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(Error::Serve(error)),
        Err(error) => return Err(Error::Serve(std::io::Error::other(error))),
    }
    let report = service.shutdown().await;
    tracing::info!(
        path = ?drained.path,
        handed_over = drained.handed_over.delivered,
        undelivered = drained.handed_over.undelivered,
        snapshot = ?drained.snapshot_sessions,
        written = report.flush.written,
        failed = report.flush.failed,
        dropped = report.dropped,
        "locus-sample stopped"
    );
    Ok(())
}
