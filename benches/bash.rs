//! placeholder bench, replaced by its area work.
fn main() {}
