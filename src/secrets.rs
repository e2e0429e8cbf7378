//! The deployment's secrets: the master key that device keys derive from, and the admin token.
//! Taken from the environment when set; otherwise generated once into the data directory
//! (mode 0600) so they survive restarts. Never logged; compared in constant time.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use rand::RngCore;
use std::path::Path;

/// A secret value whose Debug output is redacted.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// `IOTSTREAM_MASTER_KEY` (base64, at least 32 bytes) or `<data_dir>/master.key`.
pub fn master_key(data_dir: &Path) -> anyhow::Result<Secret> {
    if let Ok(v) = std::env::var("IOTSTREAM_MASTER_KEY") {
        let key = B64
            .decode(v.trim())
            .context("IOTSTREAM_MASTER_KEY must be base64")?;
        if key.len() < 32 {
            bail!("IOTSTREAM_MASTER_KEY must decode to at least 32 bytes");
        }
        return Ok(Secret(key));
    }
    let text = load_or_create(&data_dir.join("master.key"), || {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        B64.encode(key)
    })?;
    Ok(Secret(B64.decode(text.trim()).context("master.key is corrupt")?))
}

/// `IOTSTREAM_ADMIN_TOKEN` or `<data_dir>/admin.token`; the bool is true when it was generated now.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<(Secret, bool)> {
    if let Ok(v) = std::env::var("IOTSTREAM_ADMIN_TOKEN") {
        if v.trim().len() < 16 {
            bail!("IOTSTREAM_ADMIN_TOKEN must be at least 16 characters");
        }
        return Ok((Secret(v.trim().as_bytes().to_vec()), false));
    }
    let path = data_dir.join("admin.token");
    let existed = path.exists();
    let text = load_or_create(&path, || {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        format!("iot_{}", URL_SAFE_NO_PAD.encode(raw))
    })?;
    Ok((Secret(text.trim().as_bytes().to_vec()), !existed))
}

fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = make();
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    // Another process may have won the race; keep theirs.
    if std::fs::hard_link(&tmp, path).is_err() && !path.exists() {
        bail!("cannot create {}", path.display());
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(std::fs::read_to_string(path)?)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Secret(v)
    }
}
