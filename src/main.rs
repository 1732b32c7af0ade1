fn main() {
    std::process::exit(osbuilder::cli::main());
}
