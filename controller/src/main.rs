#![forbid(unsafe_code)]
fn main() {
    println!("epslice {}", env!("CARGO_PKG_VERSION"));
}
