//! Who a data directory belongs to, recorded on first start and checked on every later one.
//!
//! A Raft node must never run on another node's state (it would vote twice in one term), and
//! its initial configuration must come from its own history, not from whatever `--cluster` a
//! restart happens to be given: a node restarted with a one-member `--cluster` over a
//! three-member history would otherwise elect itself alone, beside the real cluster (split
//! brain). The file is a few `key=value` lines so an operator can read it.

use crate::error::{IoContext, WalError};
use crate::fs::sync_dir;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "identity";

/// The node a data directory belongs to and the voters it was bootstrapped with (empty for a
/// node that joined a running cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's id.
    pub node_id: u64,
    /// The voters of the node's first configuration, ascending.
    pub bootstrap_voters: Vec<u64>,
}

impl NodeIdentity {
    fn encode(&self) -> String {
        let voters: Vec<String> = self.bootstrap_voters.iter().map(u64::to_string).collect();
        format!(
            "node_id={}\nbootstrap_voters={}\n",
            self.node_id,
            voters.join(",")
        )
    }

    fn decode(path: &Path, text: &str) -> Result<NodeIdentity, WalError> {
        let bad = |reason: String| WalError::corrupt(path, 0, reason);
        let mut node_id = None;
        let mut bootstrap_voters = None;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line {line:?} is not key=value")))?;
            match key {
                "node_id" => {
                    node_id = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("node_id {value:?} is not a number")))?,
                    );
                }
                "bootstrap_voters" => {
                    let voters: Result<Vec<u64>, _> = value
                        .split(',')
                        .filter(|id| !id.is_empty())
                        .map(str::parse)
                        .collect();
                    bootstrap_voters = Some(voters.map_err(|_| {
                        bad(format!(
                            "bootstrap_voters {value:?} is not a list of numbers"
                        ))
                    })?);
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(NodeIdentity {
            node_id: node_id.ok_or_else(|| bad("node_id is missing".into()))?,
            bootstrap_voters: bootstrap_voters
                .ok_or_else(|| bad("bootstrap_voters is missing".into()))?,
        })
    }
}

fn identity_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the identity recorded in `dir`, or records `proposed` if there is none yet (a new
/// directory, or one from a version that did not record it). Returns what is in force: the
/// recorded identity wins over `proposed` for the bootstrap voters.
///
/// # Errors
/// [`WalError::IdentityMismatch`] when `dir` belongs to another node; [`WalError::Corrupt`]
/// when the file cannot be parsed; [`WalError::Io`] when it cannot be read or written.
pub fn check_or_record_identity(
    dir: &Path,
    proposed: &NodeIdentity,
) -> Result<NodeIdentity, WalError> {
    let path = identity_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded = NodeIdentity::decode(&path, &text)?;
            if recorded.node_id != proposed.node_id {
                return Err(WalError::IdentityMismatch {
                    path,
                    recorded: recorded.node_id,
                    proposed: proposed.node_id,
                });
            }
            Ok(recorded)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).at(dir)?;
            let tmp = dir.join(format!("{FILE_NAME}.tmp"));
            let mut file = std::fs::File::create(&tmp).at(&tmp)?;
            file.write_all(proposed.encode().as_bytes()).at(&tmp)?;
            file.sync_all().at(&tmp)?;
            std::fs::rename(&tmp, &path).at(&path)?;
            sync_dir(dir)?;
            Ok(proposed.clone())
        }
        Err(source) => Err(WalError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node_id: u64, voters: &[u64]) -> NodeIdentity {
        NodeIdentity {
            node_id,
            bootstrap_voters: voters.to_vec(),
        }
    }

    #[test]
    fn first_start_records_and_later_starts_keep_the_recorded_voters() {
        let dir = tempfile::tempdir().unwrap();
        let first = check_or_record_identity(dir.path(), &identity(1, &[1, 2, 3])).unwrap();
        assert_eq!(first, identity(1, &[1, 2, 3]));
        // A restart given a one-member cluster still bootstraps from the recorded three.
        let again = check_or_record_identity(dir.path(), &identity(1, &[1])).unwrap();
        assert_eq!(again, identity(1, &[1, 2, 3]));
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record_identity(dir.path(), &identity(1, &[1, 2, 3])).unwrap();
        let error = check_or_record_identity(dir.path(), &identity(2, &[1, 2, 3])).unwrap_err();
        assert!(
            matches!(
                error,
                WalError::IdentityMismatch {
                    recorded: 1,
                    proposed: 2,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_joined_node_records_no_bootstrap_voters() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record_identity(dir.path(), &identity(4, &[])).unwrap();
        let again = check_or_record_identity(dir.path(), &identity(4, &[1, 2, 3, 4])).unwrap();
        assert!(again.bootstrap_voters.is_empty());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "node_id=x\n").unwrap();
        let error = check_or_record_identity(dir.path(), &identity(1, &[1])).unwrap_err();
        assert!(error.to_string().contains("identity"), "{error}");
    }
}
