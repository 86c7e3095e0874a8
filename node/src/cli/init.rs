//! `fairgrid init`: creates a node's data dir.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, bail};
use clap::Args;
use fairgrid_protocol::Keypair;

use super::DataDirArgs;
use crate::config::{Config, documented_template};
use crate::datadir::{self, write_private_new};

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// libp2p listen multiaddr written to the config (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// HTTP API address written to the config.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let dir = args.data.dir();
    if dir.is_initialised() {
        bail!(
            "{} already holds a node key; refusing to overwrite it",
            dir.key_path().display()
        );
    }
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("creating {}", dir.root().display()))?;
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.root().display()))?;
    let defaults = Config::default();
    let listen = if args.listen.is_empty() {
        defaults.network.listen.clone()
    } else {
        args.listen.clone()
    };
    let api = args.api_listen.unwrap_or(defaults.api.listen);
    let text = documented_template(&listen, &api);
    // Refuse a config that would not load, before writing anything.
    let config = Config::from_toml_and_env(&text, "generated config", &Default::default())?;
    crate::net::NetConfig::from_config(&config.network, false)?;

    let key = Keypair::generate();
    datadir::write_secret_key(&dir.key_path(), &key)?;
    if !dir.config_path().exists() {
        std::fs::write(dir.config_path(), text)
            .with_context(|| format!("writing {}", dir.config_path().display()))?;
    }
    if !dir.token_path().exists() {
        write_private_new(
            &dir.token_path(),
            format!("{}\n", datadir::new_token()).as_bytes(),
        )?;
    }
    let peer = key.node_id();
    println!("data dir: {}", dir.root().display());
    println!("peer id:  {peer}");
    for addr in &listen {
        let note = if addr.ends_with("/0") {
            "  (port chosen at start; see run/listen.addrs)"
        } else {
            ""
        };
        println!("listen:   {addr}/p2p/{peer}{note}");
    }
    println!(
        "api:      http://{api} (token in {})",
        dir.token_path().display()
    );
    Ok(())
}
