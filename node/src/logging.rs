//! Installs the tracing subscriber (binaries only): human-readable or JSON
//! lines on stderr, filtered by `RUST_LOG` or the config's `log.filter`.
//! Targets name the subsystem: `fairgrid::net`, `fairgrid::adverts`,
//! `fairgrid::trust`, `fairgrid::ledger`, `fairgrid::api`, `fairgrid::node`.

use tracing_subscriber::EnvFilter;

pub fn init(format: &str, filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env)?,
        _ => {
            EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log filter {filter:?}: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = match format {
        "json" => builder.json().try_init(),
        _ => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
