//! The sync rule: what one pass (import or export) does with one path,
//! given the file, the entity and what both were at the last sync of this
//! folder (the base). Pure: every import, export and deletion path asks it,
//! and the table test below is the rule on one screen.
//!
//! The rule is a three-way merge, as in Unison or Syncthing: a side that
//! differs from the base changed; when only one side changed, it wins; when
//! both changed to different content, [`ConflictPolicy`] decides, and by
//! default both versions are kept. A deletion is a change like any other,
//! so a deletion never wins over an edit.

use crate::config::ConflictPolicy;

/// One side (file or entity) against the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Not there (never written, or deleted).
    Absent,
    /// There and as at the last sync.
    Unchanged,
    /// There and different from the last sync, or new (no base).
    Changed,
}

impl Side {
    /// `now` against the base hash `base`: absent, unchanged or changed.
    pub fn of(now: Option<&str>, base: Option<&str>) -> Self {
        match (now, base) {
            (None, _) => Self::Absent,
            (Some(now), Some(base)) if now == base => Self::Unchanged,
            (Some(_), _) => Self::Changed,
        }
    }
}

/// Where the file and the entity of one path stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    /// The file, by its hash against the base's file hash.
    pub file: Side,
    /// The entity, by its content hash against the base's entity hash.
    pub entity: Side,
    /// Both are there and hold the same content (the file parses to the
    /// entity's hash, or the entity renders to the file's bytes).
    pub same: bool,
}

impl Sides {
    /// From hashes: `base` is (file hash, entity hash) of the last sync,
    /// `file` the file's hash now, `entity` the entity's content hash now.
    pub fn from_hashes(base: Option<(&str, &str)>, file: Option<&str>, entity: Option<&str>, same: bool) -> Self {
        Self {
            file: Side::of(file, base.map(|b| b.0)),
            entity: Side::of(entity, base.map(|b| b.1)),
            same: same && file.is_some() && entity.is_some(),
        }
    }
}

/// Which half of a sync is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Files to entities.
    Import,
    /// Entities to files.
    Export,
}

/// What the pass does with the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// In step (the record may be refreshed), or the other pass's work.
    Nothing,
    /// Write the file's content to the entity.
    Import,
    /// Write the entity to the file.
    Export,
    /// Both changed: the entity goes to the path, the file's version is
    /// kept beside it as a conflict copy, and the conflict is recorded.
    KeepBoth,
    /// The file was deleted and the entity is as last synced.
    DeleteEntity,
    /// The entity was deleted and the file is as last synced.
    DeleteFile,
    /// Both are gone: drop the folder's record of the path.
    Forget,
    /// One side was deleted while the other was edited: the edit is kept,
    /// the record dropped (so the next pass syncs the kept side as new),
    /// and the user told why.
    KeepEdit(&'static str),
    /// Leave both as they are this pass, and tell the user why.
    Warn(&'static str),
}

/// Warning: a file's deletion was not carried to its edited entity.
pub const ENTITY_EDIT_KEPT: &str = "file deleted but its entity changed since the last sync; the entity is kept";
/// Warning: an entity's deletion was not carried to its edited file.
pub const FILE_EDIT_KEPT: &str = "entity deleted but the file was edited since the last sync; the file is kept";
/// Warning: both sides changed and `prefer_database` chose the entity.
pub const DATABASE_WINS: &str = "changed on both sides; the database version wins (conflict_policy)";
/// Warning: both sides changed and `prefer_file` chose the file.
pub const FILE_WINS: &str = "changed on both sides; the file wins (conflict_policy) and is imported next";

/// The sync rule. See the module docs and the table in the tests.
pub fn decide(sides: Sides, policy: ConflictPolicy, pass: Pass) -> Action {
    use Side::{Absent, Changed, Unchanged};
    if sides.same {
        return Action::Nothing;
    }
    let both_changed = || match (policy, pass) {
        (ConflictPolicy::KeepBoth, _) => Action::KeepBoth,
        (ConflictPolicy::PreferFile, Pass::Import) | (ConflictPolicy::PreferDatabase, Pass::Export) => match pass {
            Pass::Import => Action::Import,
            Pass::Export => Action::Export,
        },
        (ConflictPolicy::PreferDatabase, Pass::Import) => Action::Warn(DATABASE_WINS),
        (ConflictPolicy::PreferFile, Pass::Export) => Action::Warn(FILE_WINS),
    };
    match (pass, sides.file, sides.entity) {
        (_, Absent, Absent) => Action::Forget,
        (_, Changed, Changed) => both_changed(),

        (Pass::Import, Changed, Unchanged | Absent) => Action::Import,
        (Pass::Import, Absent, Unchanged) => Action::DeleteEntity,
        (Pass::Import, Absent, Changed) => Action::KeepEdit(ENTITY_EDIT_KEPT),

        (Pass::Export, Unchanged | Absent, Changed) => Action::Export,
        (Pass::Export, Unchanged, Absent) => Action::DeleteFile,
        (Pass::Export, Changed, Absent) => Action::KeepEdit(FILE_EDIT_KEPT),

        // In step, or only the other side moved on: the other pass's work.
        (_, Unchanged, Unchanged)
        | (Pass::Import, Unchanged, Changed | Absent)
        | (Pass::Export, Changed | Absent, Unchanged) => Action::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use ConflictPolicy::{KeepBoth as Keep, PreferDatabase as Db, PreferFile as File};
    use Pass::{Export as Out, Import as In};
    use Side::{Absent as A, Changed as C, Unchanged as U};

    /// Every combination of file side, entity side and pass, for each
    /// policy, and what the rule does. `same` is the both-changed-alike case.
    #[test]
    fn the_rule_on_one_screen() {
        #[rustfmt::skip]
        let table: &[(Side, Side, Pass, [Action; 3])] = &[
            //  file entity pass   KeepBoth                   PreferFile                 PreferDatabase
            (A, A, In,  [Forget,                    Forget,                    Forget]),
            (A, U, In,  [DeleteEntity,              DeleteEntity,              DeleteEntity]),
            (A, C, In,  [KeepEdit(ENTITY_EDIT_KEPT), KeepEdit(ENTITY_EDIT_KEPT), KeepEdit(ENTITY_EDIT_KEPT)]),
            (U, A, In,  [Nothing,                   Nothing,                   Nothing]),
            (U, U, In,  [Nothing,                   Nothing,                   Nothing]),
            (U, C, In,  [Nothing,                   Nothing,                   Nothing]),
            (C, A, In,  [Import,                    Import,                    Import]),
            (C, U, In,  [Import,                    Import,                    Import]),
            (C, C, In,  [KeepBoth,                  Import,                    Warn(DATABASE_WINS)]),
            (A, A, Out, [Forget,                    Forget,                    Forget]),
            (A, U, Out, [Nothing,                   Nothing,                   Nothing]),
            (A, C, Out, [Export,                    Export,                    Export]),
            (U, A, Out, [DeleteFile,                DeleteFile,                DeleteFile]),
            (U, U, Out, [Nothing,                   Nothing,                   Nothing]),
            (U, C, Out, [Export,                    Export,                    Export]),
            (C, A, Out, [KeepEdit(FILE_EDIT_KEPT),  KeepEdit(FILE_EDIT_KEPT),  KeepEdit(FILE_EDIT_KEPT)]),
            (C, U, Out, [Nothing,                   Nothing,                   Nothing]),
            (C, C, Out, [KeepBoth,                  Warn(FILE_WINS),           Export]),
        ];
        assert_eq!(table.len(), 18, "3 file sides x 3 entity sides x 2 passes");
        for &(file, entity, pass, expected) in table {
            for (policy, want) in [Keep, File, Db].into_iter().zip(expected) {
                let got = decide(Sides { file, entity, same: false }, policy, pass);
                assert_eq!(got, want, "file {file:?}, entity {entity:?}, {pass:?}, {policy:?}");
                // Both present with the same content: always in step.
                if file != A && entity != A {
                    assert_eq!(decide(Sides { file, entity, same: true }, policy, pass), Nothing);
                }
            }
        }
    }

    /// No combination deletes a side that changed since the last sync.
    #[test]
    fn a_deletion_never_wins_over_an_edit() {
        for file in [A, U, C] {
            for entity in [A, U, C] {
                for pass in [In, Out] {
                    for policy in [Keep, File, Db] {
                        let action = decide(Sides { file, entity, same: false }, policy, pass);
                        if action == DeleteEntity {
                            assert_eq!(entity, U);
                        }
                        if action == DeleteFile {
                            assert_eq!(file, U);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sides_from_hashes() {
        let base = Some(("f1", "e1"));
        assert_eq!(Sides::from_hashes(base, Some("f1"), Some("e1"), false), Sides { file: U, entity: U, same: false });
        assert_eq!(Sides::from_hashes(base, Some("f2"), None, false), Sides { file: C, entity: A, same: false });
        // Without a base every present side is new, so changed.
        assert_eq!(Sides::from_hashes(None, Some("f"), Some("e"), true), Sides { file: C, entity: C, same: true });
        assert_eq!(Sides::from_hashes(None, None, Some("e"), true), Sides { file: A, entity: C, same: false });
    }
}
