//! A build's file and directory outputs arriving from kilnd, in chunks, one output after the
//! other. A file is written aside and renamed into place when complete, so its destination
//! never holds half a file. A directory (`type=local`) comes as a tar stream, extracted as it
//! arrives with nothing able to land outside the directory (see `layer::extract`).

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::ClientError;
use crate::daemon::chunks::{self, Piece};
use crate::daemon::proto::OutputChunk;

/// Where output `i` goes on the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputDest {
    File(PathBuf),
    /// A directory, sent as a tar stream.
    Dir(PathBuf),
}

enum Open {
    File {
        index: u32,
        file: tokio::fs::File,
        partial: PathBuf,
    },
    Dir {
        index: u32,
        tx: mpsc::Sender<Piece>,
        extractor: tokio::task::JoinHandle<Result<(), ClientError>>,
    },
}

pub struct OutputFiles {
    dests: Vec<Option<OutputDest>>,
    open: Option<Open>,
}

impl Drop for OutputFiles {
    fn drop(&mut self) {
        // A build that ends mid-file leaves no partial file behind.
        if let Some(Open::File { partial, .. }) = self.open.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

impl OutputFiles {
    pub fn new(dests: Vec<Option<OutputDest>>) -> Self {
        OutputFiles { dests, open: None }
    }

    pub async fn chunk(&mut self, c: OutputChunk) -> Result<(), ClientError> {
        let dest = self
            .dests
            .get(c.index as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| ClientError::Protocol(format!("unexpected output {}", c.index)))?;
        let current = match &self.open {
            Some(Open::File { index, .. } | Open::Dir { index, .. }) => Some(*index),
            None => None,
        };
        if current != Some(c.index) {
            self.open = Some(open(c.index, &dest).await?);
        }
        match &mut self.open {
            Some(Open::File { file, partial, .. }) => {
                use tokio::io::AsyncWriteExt;
                let path = partial.clone();
                let io = |source| ClientError::Output {
                    path: path.clone(),
                    source,
                };
                file.write_all(&c.data).await.map_err(io)?;
                if c.eof {
                    file.flush().await.map_err(io)?;
                    let OutputDest::File(final_path) = &dest else {
                        return Err(ClientError::Protocol("output kind changed".into()));
                    };
                    tokio::fs::rename(&path, final_path)
                        .await
                        .map_err(|source| ClientError::Output {
                            path: final_path.clone(),
                            source,
                        })?;
                    self.open = None;
                }
            }
            Some(Open::Dir { tx, .. }) => {
                // A closed channel means the extractor stopped: its error is reported below.
                if !c.data.is_empty() {
                    let _ = tx.send(Piece::Data(c.data)).await;
                }
                if c.eof {
                    let _ = tx.send(Piece::End).await;
                    if let Some(Open::Dir { extractor, .. }) = self.open.take() {
                        extractor
                            .await
                            .map_err(|e| ClientError::Protocol(e.to_string()))??;
                    }
                }
            }
            None => {}
        }
        Ok(())
    }
}

async fn open(index: u32, dest: &OutputDest) -> Result<Open, ClientError> {
    match dest {
        OutputDest::File(dest) => {
            let io = |source| ClientError::Output {
                path: dest.clone(),
                source,
            };
            if let Some(p) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(p).await.map_err(io)?;
            }
            let partial = crate::engine::build::partial_path(dest);
            let file = tokio::fs::File::create(&partial).await.map_err(io)?;
            Ok(Open::File {
                index,
                file,
                partial,
            })
        }
        OutputDest::Dir(dir) => {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| ClientError::Output {
                    path: dir.clone(),
                    source,
                })?;
            let (tx, reader) = chunks::channel(8);
            let dir = dir.clone();
            let extractor = tokio::task::spawn_blocking(move || {
                crate::layer::extract::extract_tree(reader, &dir)
                    .map(|stats| tracing::debug!(?stats, dir = %dir.display(), "output extracted"))
                    .map_err(|e| ClientError::Output {
                        path: dir,
                        // Flat: the layer error already says what its source says.
                        source: std::io::Error::other(e.to_string()),
                    })
            });
            Ok(Open::Dir {
                index,
                tx,
                extractor,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &str, body: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
        b.into_inner().unwrap()
    }

    fn chunk(index: u32, data: &[u8], eof: bool) -> OutputChunk {
        OutputChunk {
            index,
            data: data.to_vec(),
            eof,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_and_directories_arrive_whole() {
        let t = tempfile::tempdir().unwrap();
        let (file, dir) = (t.path().join("o/out.tar"), t.path().join("d"));
        let mut outs = OutputFiles::new(vec![
            Some(OutputDest::File(file.clone())),
            None,
            Some(OutputDest::Dir(dir.clone())),
        ]);
        outs.chunk(chunk(0, b"ab", false)).await.unwrap();
        assert!(!file.exists());
        outs.chunk(chunk(0, b"c", true)).await.unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"abc");
        let tar = tar_with("sub/f", "hello");
        let (a, b) = tar.split_at(700);
        outs.chunk(chunk(2, a, false)).await.unwrap();
        outs.chunk(chunk(2, b, false)).await.unwrap();
        outs.chunk(chunk(2, &[], true)).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("sub/f")).unwrap(), "hello");
        assert!(outs.chunk(chunk(1, b"x", true)).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_directory_stream_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let mut outs = OutputFiles::new(vec![Some(OutputDest::Dir(t.path().join("d")))]);
        outs.chunk(chunk(0, &tar_with("f", "x")[..100], false))
            .await
            .unwrap();
        let Some(Open::Dir { tx, extractor, .. }) = outs.open.take() else {
            panic!("no open directory");
        };
        drop(tx);
        let e = extractor.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("d"), "{e}");
    }
}
