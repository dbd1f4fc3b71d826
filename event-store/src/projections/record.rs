//! What the store remembers of each projection: whether it is enabled, its epoch and version
//! (as the real server counts them), and how far in `$all` it has written its links.
//!
//! The record lives in the store's records table and is rewritten in the same transaction as
//! each batch of links, so after a crash the checkpoint names exactly what was linked.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::builtin::Builtin;
use super::ProjectionError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionRecord {
    pub enabled: bool,
    /// The version at the last reset; links of an older version belong to a former life of the
    /// projection. -1 until the first reset, as on the real server.
    pub epoch: i64,
    /// Counts the changes of definition: each enable, disable and reset adds one.
    pub version: i64,
    /// The last position of `$all` dealt with; 0 before the first.
    pub checkpoint: u64,
}

impl ProjectionRecord {
    /// A projection the store has never run: created (version 0) and enabled once (version 1),
    /// as the real server leaves a standard projection started on a fresh database.
    pub fn fresh() -> ProjectionRecord {
        ProjectionRecord {
            enabled: true,
            epoch: -1,
            version: 1,
            checkpoint: 0,
        }
    }

    pub fn key(projection: Builtin) -> String {
        format!("projections/{}", projection.name())
    }

    pub fn encode(&self) -> Bytes {
        // Four plain fields: serialising them cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(projection: Builtin, bytes: &[u8]) -> Result<ProjectionRecord, ProjectionError> {
        serde_json::from_slice(bytes).map_err(|e| ProjectionError::CorruptRecord {
            projection: projection.name(),
            reason: e.to_string(),
        })
    }

    /// The record as a changed definition leaves it.
    pub fn next_version(self) -> ProjectionRecord {
        ProjectionRecord {
            version: self.version + 1,
            ..self
        }
    }

    /// `$v` of the links it writes: `<projection id>:<epoch>:<version>:<subsystem version>`.
    pub fn link_version(&self, projection: Builtin) -> String {
        format!(
            "{}:{}:{}:{SUBSYSTEM_VERSION}",
            projection.projection_id(),
            self.epoch,
            self.version
        )
    }
}

/// The projections subsystem version the real server stamps on what its projections write.
const SUBSYSTEM_VERSION: u32 = 4;

/// The projection id and version a link's `$v` names, if it is one of ours.
pub fn parse_link_version(version: &str) -> Option<(u64, i64)> {
    let mut parts = version.split(':');
    let id = parts.next()?.parse().ok()?;
    let _epoch: i64 = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    Some((id, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_its_links_as_the_real_server() {
        let record = ProjectionRecord::fresh();
        let decoded = ProjectionRecord::decode(Builtin::ByCategory, &record.encode()).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(record.link_version(Builtin::ByCategory), "3:-1:1:4");
        assert_eq!(parse_link_version("3:-1:1:4"), Some((3, 1)));
        assert_eq!(parse_link_version("nonsense"), None);
        assert!(ProjectionRecord::decode(Builtin::Streams, b"{").is_err());
    }
}
