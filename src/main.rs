//! The `swarm` binary: parse the command line and hand off to the library.

fn main() {
    std::process::exit(renderswarm::cli::main());
}
