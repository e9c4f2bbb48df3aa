//! `crdgen`: prints the `StatefulService` CRD generated from the Rust types.
//!
//! Its output is committed as `crds/statefulservices.locus.dev.yaml`:
//! `cargo run -p locus-operator --bin crdgen > crds/statefulservices.locus.dev.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match locus_operator::crd::crd_yaml() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD as YAML: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("crdgen: cannot write to stdout: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
