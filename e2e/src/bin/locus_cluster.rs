//! placeholder, replaced in this change
fn main() {}
