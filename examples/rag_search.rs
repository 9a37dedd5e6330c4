//! placeholder example, replaced by its backend work.
fn main() {}
