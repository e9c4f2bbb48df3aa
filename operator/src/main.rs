//! `locus-operator`: runs the `StatefulService` controller.

fn main() {
    eprintln!("locus-operator: the controller is not built yet");
    std::process::exit(2);
}
