//! `crdgen`: prints the StatefulService CRD generated from the Rust types.

fn main() {
    eprintln!("crdgen: the CRD types are not built yet");
    std::process::exit(2);
}
