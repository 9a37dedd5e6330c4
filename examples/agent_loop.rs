//! placeholder example, replaced by the client work.
fn main() {}
