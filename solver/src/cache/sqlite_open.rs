//! Opening a SQLite database that several kiln processes share.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// Opens `path` in WAL mode with a busy timeout, then runs `setup` (schema, pragmas).
///
/// Two processes opening a new database at the same moment can get "database is locked"
/// from the switch to WAL and the first schema statements even with a busy timeout, since
/// SQLite does not always call the busy handler there; those steps are retried for a while
/// instead of failing the build.
pub fn open_shared(path: &Path, setup: &str) -> rusqlite::Result<Connection> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_open(path, setup) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn try_open(path: &Path, setup: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    conn.execute_batch(setup)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_openers_of_a_new_database_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || {
                    open_shared(&p, "CREATE TABLE IF NOT EXISTS t (a INTEGER);").map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}
