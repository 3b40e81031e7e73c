//! Command line.
pub fn main() {}
