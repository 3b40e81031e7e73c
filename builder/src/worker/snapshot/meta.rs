//! Snapshot metadata in SQLite: one row per snapshot. Rows are created before their
//! directories and deleted after them, so a directory without a row is always garbage.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::owner::Owner;
use super::{SnapshotError, SnapshotId};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    parent      INTEGER REFERENCES snapshots(id),
    state       TEXT NOT NULL CHECK (state IN ('active', 'committed', 'removing')),
    name        TEXT UNIQUE,
    owner_pid   INTEGER,
    owner_start INTEGER,
    layer_info  TEXT,
    created     INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    diff_root   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Committed,
    Removing,
}

impl State {
    fn parse(s: &str) -> State {
        match s {
            "active" => State::Active,
            "committed" => State::Committed,
            _ => State::Removing,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub id: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub state: State,
    pub owner: Option<Owner>,
}

impl Row {
    /// Left by a crash: an active snapshot whose process is gone, or a half-done removal.
    pub fn is_stale(&self) -> bool {
        match self.state {
            State::Active => !self.owner.is_some_and(|o| o.is_alive()),
            State::Removing => true,
            State::Committed => false,
        }
    }
}

/// Outcome of [`Meta::commit`].
pub enum Committed {
    /// The active snapshot became this committed one.
    Own(SnapshotId),
    /// Another snapshot already had the name: the active row was dropped, its dirs are garbage.
    Existing(SnapshotId),
}

pub struct Meta {
    conn: Mutex<Connection>,
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, SnapshotError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| SnapshotError::io("creating directory", dir, e))?;
        }
        // Other kiln processes may hold the write lock for a moment: wait rather than fail.
        let conn =
            kiln_solver::cache::open_shared(path, &format!("PRAGMA foreign_keys=ON;\n{SCHEMA}"))?;
        add_diff_root_column(&conn)?;
        Ok(Meta {
            conn: Mutex::new(conn),
        })
    }

    /// Marks `id` (not yet committed) as the bottom of a chain merged onto another: its
    /// layer is its upper dir alone, not a diff against the snapshots below it.
    pub fn set_diff_root(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        let n = self.conn().execute(
            "UPDATE snapshots SET diff_root = 1 WHERE id = ?1 AND state = 'active'",
            [id],
        )?;
        if n == 0 {
            return Err(SnapshotError::NotActive(id));
        }
        Ok(())
    }

    pub fn is_diff_root(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        let v: Option<i64> = self
            .conn()
            .query_row("SELECT diff_root FROM snapshots WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        v.map(|v| v != 0).ok_or(SnapshotError::NotFound(id))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction (rusqlite rolls back
        // on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_active(
        &self,
        parent: Option<SnapshotId>,
        owner: Owner,
    ) -> Result<SnapshotId, SnapshotError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(p) = parent {
            let state = row_in(&tx, p)?.map(|r| r.state);
            match state {
                Some(State::Committed) => {}
                Some(_) => return Err(SnapshotError::NotCommitted(p)),
                None => return Err(SnapshotError::NotFound(p)),
            }
        }
        tx.execute(
            "INSERT INTO snapshots (parent, state, owner_pid, owner_start) VALUES (?1, 'active', ?2, ?3)",
            params![parent, owner.pid, owner.start as i64],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    pub fn get(&self, id: SnapshotId) -> Result<Option<Row>, SnapshotError> {
        row_in(&self.conn(), id)
    }

    pub fn commit(&self, id: SnapshotId, name: Option<&str>) -> Result<Committed, SnapshotError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match row_in(&tx, id)? {
            Some(r) if r.state == State::Active => {}
            Some(_) => return Err(SnapshotError::NotActive(id)),
            None => return Err(SnapshotError::NotFound(id)),
        }
        if let Some(name) = name {
            let existing: Option<SnapshotId> = tx
                .query_row(
                    "SELECT id FROM snapshots WHERE name = ?1 AND state = 'committed'",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(existing) = existing {
                tx.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
                tx.commit()?;
                return Ok(Committed::Existing(existing));
            }
        }
        tx.execute(
            "UPDATE snapshots SET state = 'committed', name = ?2, owner_pid = NULL, owner_start = NULL WHERE id = ?1",
            params![id, name],
        )?;
        tx.commit()?;
        Ok(Committed::Own(id))
    }

    pub fn parent_of(&self, id: SnapshotId) -> Result<Option<SnapshotId>, SnapshotError> {
        Ok(self.get(id)?.ok_or(SnapshotError::NotFound(id))?.parent)
    }

    /// Fails unless `id` is in state `want` (active or committed), with the matching error.
    pub fn expect(&self, id: SnapshotId, want: State) -> Result<(), SnapshotError> {
        match self.get(id)? {
            Some(r) if r.state == want => Ok(()),
            Some(_) if want == State::Active => Err(SnapshotError::NotActive(id)),
            Some(_) => Err(SnapshotError::NotCommitted(id)),
            None => Err(SnapshotError::NotFound(id)),
        }
    }

    pub fn get_by_name(&self, name: &str) -> Result<Option<SnapshotId>, SnapshotError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM snapshots WHERE name = ?1 AND state = 'committed'",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn children(&self, id: SnapshotId) -> Result<Vec<SnapshotId>, SnapshotError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM snapshots WHERE parent = ?1")?;
        let ids = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    pub fn delete(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Marks a committed snapshot for removal (its name is released at once); refuses while
    /// other snapshots are built on it.
    pub fn mark_removing(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match row_in(&tx, id)? {
            Some(r) if r.state == State::Committed => {}
            Some(_) => return Err(SnapshotError::NotCommitted(id)),
            None => return Err(SnapshotError::NotFound(id)),
        }
        let children: i64 = tx.query_row(
            "SELECT COUNT(*) FROM snapshots WHERE parent = ?1",
            [id],
            |r| r.get(0),
        )?;
        if children > 0 {
            return Err(SnapshotError::HasChildren {
                id,
                children: children as usize,
            });
        }
        tx.execute(
            "UPDATE snapshots SET state = 'removing', name = NULL WHERE id = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_layer_info(&self, id: SnapshotId, info: &str) -> Result<(), SnapshotError> {
        let n = self.conn().execute(
            "UPDATE snapshots SET layer_info = ?2 WHERE id = ?1 AND state = 'committed'",
            params![id, info],
        )?;
        if n == 0 {
            return Err(SnapshotError::NotCommitted(id));
        }
        Ok(())
    }

    pub fn layer_info(&self, id: SnapshotId) -> Result<Option<String>, SnapshotError> {
        let info: Option<Option<String>> = self
            .conn()
            .query_row(
                "SELECT layer_info FROM snapshots WHERE id = ?1 AND state = 'committed'",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(info.flatten())
    }

    /// Committed snapshots with their names and creation times (seconds since the epoch).
    pub fn committed(&self) -> Result<Vec<super::SnapshotInfo>, SnapshotError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, parent, name, created FROM snapshots WHERE state = 'committed' ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::SnapshotInfo {
                    id: r.get(0)?,
                    parent: r.get(1)?,
                    name: r.get(2)?,
                    created: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// All rows, for crash cleanup.
    pub fn all(&self) -> Result<Vec<Row>, SnapshotError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, parent, state, owner_pid, owner_start FROM snapshots")?;
        let rows = stmt
            .query_map([], row_from)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Databases made before merges existed get the column (another process may be adding it at
/// the same moment: its "duplicate column" is success).
fn add_diff_root_column(conn: &Connection) -> Result<(), SnapshotError> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('snapshots') WHERE name = 'diff_root'")?
        .exists([])?;
    if has {
        return Ok(());
    }
    match conn
        .execute_batch("ALTER TABLE snapshots ADD COLUMN diff_root INTEGER NOT NULL DEFAULT 0")
    {
        Err(rusqlite::Error::SqliteFailure(_, Some(msg))) if msg.contains("duplicate column") => {
            Ok(())
        }
        other => Ok(other?),
    }
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let state: String = r.get(2)?;
    let pid: Option<u32> = r.get(3)?;
    let start: Option<i64> = r.get(4)?;
    Ok(Row {
        id: r.get(0)?,
        parent: r.get(1)?,
        state: State::parse(&state),
        owner: pid.map(|pid| Owner {
            pid,
            start: start.unwrap_or(0) as u64,
        }),
    })
}

fn row_in(conn: &Connection, id: SnapshotId) -> Result<Option<Row>, SnapshotError> {
    Ok(conn
        .query_row(
            "SELECT id, parent, state, owner_pid, owner_start FROM snapshots WHERE id = ?1",
            [id],
            row_from,
        )
        .optional()?)
}
