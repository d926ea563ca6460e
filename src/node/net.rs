//! The node's side of the network: identity now; gossip, sync and fetching
//! once the swarm layer joins.

use std::path::Path;

use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;

use super::{NetConfig, NodeError};
use crate::ledger::{Delta, JobId};

/// The node's key: made once, kept in the data directory (mode 0600), so a
/// restarted node is the same peer with the same claims.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join("node.key");
    let io = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the node key does not decode ({e}); move it away to make a new identity"),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            write_private(&path, &bytes).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The swarm connection. No value of it exists until the swarm layer is
/// built into the node; until then every node runs alone.
pub enum Net {}

/// What the swarm tells the node.
pub type NetEvents = ();

impl Net {
    pub fn start(
        _key: Keypair,
        _cfg: &NetConfig,
        _stop: CancellationToken,
    ) -> Result<(Net, NetEvents), NodeError> {
        Err(NodeError::Net("this build runs nodes alone".into()))
    }

    pub fn publish_delta(&self, _id: JobId, _delta: &Delta) {
        match *self {}
    }

    pub async fn close(&self) {
        match *self {}
    }
}
