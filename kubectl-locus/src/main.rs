//! `kubectl-locus`: the kubectl plugin binary. kubectl runs it as `kubectl locus` when it is
//! on `PATH`. Parses the command line, runs it, and maps the outcome to an exit code: 0 shown,
//! 1 could not be read, 2 bad command line. The work is in the `kubectl_locus` library.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use kubectl_locus::args::{self, Command, USAGE};

fn main() -> ExitCode {
    let arguments: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(std::ffi::OsString::into_string)
        .collect();
    let command = match arguments {
        Ok(arguments) => args::parse(arguments),
        Err(bad) => Err(args::UsageError(format!(
            "argument {} is not valid UTF-8",
            bad.to_string_lossy()
        ))),
    };
    let status = match command {
        Ok(Command::Status(status)) => status,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("kubectl-locus {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr, only the plugin's own by default: a failed request is reported once,
    // as the error below. KUBECTL_LOCUS_LOG=debug also shows the client's.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBECTL_LOCUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kubectl_locus=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let width = kubectl_locus::terminal_width(std::env::var("COLUMNS").ok().as_deref());
    match runtime.block_on(kubectl_locus::status(&status, width)) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = stdout.write_all(output.as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
