//! placeholder bench, replaced by the client work.
fn main() {}
