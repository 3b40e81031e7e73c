fn main() {
    eprintln!("kilnd: the daemon is not implemented yet; `kiln` runs the engine embedded");
    std::process::exit(1);
}
