//! A byte stream arriving in chunks over gRPC (an archive the client sends, a directory's
//! tar the daemon sends), read as a blocking `Read` by the thread that unpacks it. The sender
//! ends it with [`Piece::End`]; a sender dropped before that (the stream broke) is an error
//! for the reader, never a short but "complete" stream.

use tokio::sync::mpsc;

pub enum Piece {
    Data(Vec<u8>),
    End,
}

/// The sending half and the reader; `bound` chunks may wait between them.
pub fn channel(bound: usize) -> (mpsc::Sender<Piece>, ChunkReader) {
    let (tx, rx) = mpsc::channel(bound);
    let reader = ChunkReader {
        rx,
        buf: Vec::new(),
        pos: 0,
        ended: false,
    };
    (tx, reader)
}

pub struct ChunkReader {
    rx: mpsc::Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl std::io::Read for ChunkReader {
    /// Blocking: call from a blocking thread.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the transfer was cut short",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn ends_only_when_told() {
        let (tx, mut r) = channel(4);
        tx.blocking_send(Piece::Data(b"ab".to_vec())).unwrap();
        tx.blocking_send(Piece::Data(b"c".to_vec())).unwrap();
        tx.blocking_send(Piece::End).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");

        let (tx, mut r) = channel(4);
        tx.blocking_send(Piece::Data(b"ab".to_vec())).unwrap();
        drop(tx);
        let e = r.read_to_string(&mut String::new()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
