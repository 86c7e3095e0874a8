//! `fairgrid-testnet`: runs fairgrid nodes on loopback and drives scenarios.

fn main() {
    eprintln!("fairgrid-testnet: the demo scenario is not built yet (see issue 6)");
    std::process::exit(2);
}
