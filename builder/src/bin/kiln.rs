fn main() {
    kiln::cli::main()
}
