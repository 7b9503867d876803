//! Fleet measurements (stub).
fn main() {}
