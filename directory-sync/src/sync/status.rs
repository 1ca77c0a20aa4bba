//! What `status` and the dashboard show of a folder, and its conflicts.

use super::{SyncError, Syncer};
use crate::layout::safe_join;
use crate::state::{Conflict, RootState, StateDb};
//__REMOVED__ //__REMOVED__ //__REMOVED__ //__REMOVED__ //__REMOVED__ //__REMOVED__ use std::path::{PathBuf};
use std::path::PathBuf;

impl Syncer {
    /// Conflicts still open: those whose conflict copy is still in the
    /// folder. Reads only; [`Syncer::sync`] forgets the resolved ones.
    pub async fn open_conflicts(&self) -> Result<Vec<Conflict>, SyncError> {
        Ok(self.conflicts_by_state().await?.0)
    }

    /// (open, resolved): a conflict is resolved when the user removed its copy.
    async fn conflicts_by_state(&self) -> Result<(Vec<Conflict>, Vec<Conflict>), SyncError> {
        let root = self.root()?;
        let recorded = self.state.conflicts(&root.to_string_lossy()).await?;
        Ok(recorded.into_iter().partition(|c| safe_join(&root, &c.conflict_path).is_ok_and(|p| p.exists())))
    }

    /// Forgets conflicts the user resolved (their copy is gone).
    pub(super) async fn forget_resolved_conflicts(&self) -> Result<(), SyncError> {
        let resolved: Vec<String> = self.conflicts_by_state().await?.1.into_iter().map(|c| c.conflict_path).collect();
        self.state.resolve_conflicts(&self.root_name()?, &resolved).await?;
        Ok(())
    }

    /// The folder's bookkeeping.
    pub async fn root_state(&self) -> Result<RootState, SyncError> {
        Ok(self.state.root(&self.root_name()?).await?)
    }

    /// Where the folder stands: last sync, entities per type, open conflicts.
    pub async fn folder_status(&self) -> Result<FolderStatus, SyncError> {
        let mut entities = std::collections::BTreeMap::new();
        for entity_type in std::iter::once(&self.config.base_type).chain(&self.config.entity_types) {
            entities.insert(entity_type.clone(), self.store.count(Some(entity_type)).await?);
        }
        let root = self.root_state().await?;
        let root_name = self.root_name()?;
        let in_folder = self.state.count_files(&root_name).await?;
        let outdated = self.state.count_outdated(&root_name).await?;
        Ok(FolderStatus {
            folder: self.config.sync_path.clone(),
            last_sync: root.last_sync,
            last_summary: root.last_summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            not_in_folder: entities.values().sum::<u64>().saturating_sub(in_folder) + outdated,
            entities,
            conflicts: self.open_conflicts().await?,
        })
    }
}

impl FolderStatus {
    /// What the database knows of a folder that is not on this machine
    /// (synced by a worker elsewhere): no entity counts, conflicts as recorded.
    pub async fn from_state(state: &StateDb, root: &str) -> Result<Self, SyncError> {
        let recorded = state.root(root).await?;
        Ok(Self {
            folder: PathBuf::from(root),
            last_sync: recorded.last_sync,
            last_summary: recorded.last_summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            entities: std::collections::BTreeMap::new(),
            not_in_folder: 0,
            conflicts: state.conflicts(root).await?,
        })
    }
}

/// A synced folder as `status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FolderStatus {
    /// The folder.
    pub folder: PathBuf,
    /// When it was last synced (RFC 3339).
    pub last_sync: Option<String>,
    /// What that sync did ([`crate::SyncSummary`] as JSON).
    pub last_summary: Option<serde_json::Value>,
    /// Entities per type in the database.
    pub entities: std::collections::BTreeMap<String, u64>,
    /// Entities of the folder's types that no file of the folder holds, or
    /// whose file holds an older version (not exported yet, or failed to write).
    pub not_in_folder: u64,
    /// Conflicts found and not yet cleared.
    pub conflicts: Vec<Conflict>,
}
