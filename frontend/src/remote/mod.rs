//! Remote ADD sources: http(s) URLs and git repositories, recognised and taken apart the way
//! BuildKit's Dockerfile frontend does (pure string work; the builder fetches them).

pub mod git;
pub mod http;
mod url;

pub use git::{is_commit_sha, parse_git_ref, redact, GitRef, GitSource};
pub use http::{is_http_source, parse_http_checksum, url_file_name};
