//! `edgectl`, edgeio's command-line client: `cargo run --example edgectl -- validate job.yaml`.
//!
//! A thin wrapper over [`edgeio::cli::run`] with the real standard streams.

fn main() {
    let code = edgeio::cli::run(
        std::env::args_os(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
