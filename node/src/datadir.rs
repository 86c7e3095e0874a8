//! The node's data directory: key, config, API token, certificate, ledger,
//! and the run files a running node writes so that local tools find it.
//!
//! ```text
//! D/node.key      node secret key, hex, mode 0600
//! D/config.toml   documented config (see config.rs)
//! D/api.token     bearer token of the HTTP API, mode 0600
//! D/node.cert     optional owner certificate (hex of the signed envelope)
//! D/ledger/       sled database
//! D/run/api.addr  the API's bound address while the node runs
//! D/run/listen.addrs  the libp2p listen addresses while the node runs
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fairgrid_protocol::{Keypair, OwnerCertificate, Revocation, Signed, SignedMessage};

use crate::error::{NodeError, Result};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// `$FAIRGRID_DATA_DIR`, else `~/.fairgrid`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("FAIRGRID_DATA_DIR") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".fairgrid")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn key_path(&self) -> PathBuf {
        self.root.join("node.key")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn token_path(&self) -> PathBuf {
        self.root.join("api.token")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.root.join("node.cert")
    }
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn api_addr_path(&self) -> PathBuf {
        self.run_dir().join("api.addr")
    }
    pub fn listen_addrs_path(&self) -> PathBuf {
        self.run_dir().join("listen.addrs")
    }

    pub fn is_initialised(&self) -> bool {
        self.key_path().exists()
    }

    pub fn load_key(&self) -> Result<Keypair> {
        read_secret_key(&self.key_path())
    }

    pub fn load_token(&self) -> Result<String> {
        let path = self.token_path();
        let token = fs::read_to_string(&path).map_err(|e| NodeError::io(&path, e))?;
        let token = token.trim().to_string();
        if token.len() < 32 {
            return Err(NodeError::KeyFile {
                path,
                reason: "API token is shorter than 32 characters".into(),
            });
        }
        Ok(token)
    }

    /// The API address of the running node, from its run file.
    pub fn running_api_addr(&self) -> Result<String> {
        let path = self.api_addr_path();
        fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| NodeError::io(&path, e))
    }
}

/// Writes `contents` to a new file readable by the owner only. Refuses to
/// overwrite: a key is never silently replaced.
pub fn write_private_new(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| NodeError::io(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| NodeError::io(path, e))
}

/// Writes a file atomically (temp file + rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(|e| NodeError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| NodeError::io(path, e))
}

pub fn write_secret_key(path: &Path, key: &Keypair) -> Result<()> {
    write_private_new(
        path,
        format!("{}\n", hex::encode(key.secret_bytes())).as_bytes(),
    )
}

/// Reads a hex secret key, refusing files that others can read.
pub fn read_secret_key(path: &Path) -> Result<Keypair> {
    let meta = fs::metadata(path).map_err(|e| NodeError::io(path, e))?;
    let bad = |reason: String| NodeError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets others read the key; run `chmod 600 {}`",
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret)
        .map_err(|e| bad(format!("expected 64 hex digits: {e}")))?;
    Ok(Keypair::from_secret_bytes(secret))
}

/// A fresh random API token (256 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// Reads a signed message stored as one line of hex (certificates and
/// revocation lists).
pub fn read_signed_hex<T: SignedMessage>(path: &Path) -> Result<Signed<T>> {
    let text = fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
    let hex_line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let bytes = hex::decode(hex_line).map_err(|e| NodeError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("not hex: {e}"),
    })?;
    Signed::<T>::from_bytes(&bytes).map_err(|e| NodeError::KeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub fn signed_hex_text<T: SignedMessage>(comment: &str, signed: &Signed<T>) -> String {
    format!("# {comment}\n{}\n", hex::encode(signed.to_bytes()))
}

pub fn read_certificate(path: &Path) -> Result<Signed<OwnerCertificate>> {
    read_signed_hex(path)
}

pub fn read_revocation(path: &Path) -> Result<Signed<Revocation>> {
    read_signed_hex(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = Keypair::from_seed(b"k");
        write_secret_key(&path, &key).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret_key(&path).unwrap().public(), key.public());
        assert!(write_secret_key(&path, &key).is_err(), "never overwrites");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_private_new(&path, b"not hex at all").unwrap();
        let err = read_secret_key(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
