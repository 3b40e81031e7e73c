//! A static file server on 127.0.0.1 for `ADD <url>` and git-over-dumb-HTTP tests: GET and
//! HEAD of the files under a directory, with `Last-Modified` from the file's mtime, optional
//! strong `ETag`s (content hashes) honouring `If-None-Match`, optional
//! `Content-Disposition`, redirects, and a log of what it answered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::background::Background;

/// How the server answers.
#[derive(Clone, Debug, Default)]
pub struct FileServerOptions {
    /// Send `ETag`s and answer `If-None-Match` with 304.
    pub etags: bool,
    /// Sent as `Content-Disposition: attachment; filename="…"` with every file.
    pub attachment_name: Option<String>,
}

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub status: u16,
}

struct Shared {
    root: PathBuf,
    options: FileServerOptions,
    redirects: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<Served>>,
}

/// The running server; stopped on drop.
pub struct FileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _background: Background,
}

impl FileServer {
    /// Serves the files under `root`.
    pub fn start(root: &Path, options: FileServerOptions) -> FileServer {
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            options,
            redirects: Mutex::default(),
            log: Mutex::default(),
        });
        let s = shared.clone();
        let (addr, background) = Background::serve("kiln-testkit-files", move |stream| {
            let s = s.clone();
            async move {
                let service = hyper::service::service_fn(move |req| answer(req, s.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        FileServer {
            addr,
            shared,
            _background: background,
        }
    }

    /// `http://127.0.0.1:PORT/<path>` (`path` without its leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Answers `from` (a path such as `/old.txt`) with a 302 to `to` (a path or a URL).
    pub fn redirect(&self, from: &str, to: &str) {
        self.shared
            .redirects
            .lock()
            .unwrap()
            .insert(from.to_string(), to.to_string());
    }

    /// Everything answered so far, in order.
    pub fn requests(&self) -> Vec<Served> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }
}

type Body = Full<Bytes>;

async fn answer(req: Request<Incoming>, s: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = respond(&req, &s, &path);
    s.log.lock().unwrap().push(Served {
        method: req.method().to_string(),
        path,
        status: resp.status().as_u16(),
    });
    Ok(resp)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(code.to_string())));
    *r.status_mut() = code;
    r
}

fn respond(req: &Request<Incoming>, s: &Shared, path: &str) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if let Some(to) = s.redirects.lock().unwrap().get(path) {
        let mut r = status(StatusCode::FOUND);
        r.headers_mut().insert("location", to.parse().unwrap());
        return r;
    }
    let Some(file) = resolve(&s.root, path) else {
        return status(StatusCode::NOT_FOUND);
    };
    let (Ok(data), Ok(meta)) = (std::fs::read(&file), std::fs::metadata(&file)) else {
        return status(StatusCode::NOT_FOUND);
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&data))[..16]);
    let modified = meta
        .modified()
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    let mut resp = if s.options.etags && if_none_match(req, &etag) {
        status(StatusCode::NOT_MODIFIED)
    } else if req.method() == Method::HEAD {
        status(StatusCode::OK)
    } else {
        Response::new(Full::new(Bytes::from(data)))
    };
    let h = resp.headers_mut();
    h.insert("last-modified", modified.parse().unwrap());
    h.insert("content-type", "application/octet-stream".parse().unwrap());
    if s.options.etags {
        h.insert("etag", etag.parse().unwrap());
    }
    if let Some(name) = &s.options.attachment_name {
        let v = format!("attachment; filename=\"{name}\"");
        h.insert("content-disposition", v.parse().unwrap());
    }
    resp
}

fn if_none_match(req: &Request<Incoming>, etag: &str) -> bool {
    req.headers()
        .get_all("if-none-match")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*")
}

/// The file `path` names under `root`; None for anything that climbs out or is no file.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    full.is_file().then_some(full)
}
