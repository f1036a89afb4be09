//! GitHub: `githubDispatch` ([`dispatch`]) and authenticating as a GitHub App ([`app`]).
//! What both send to GitHub's REST API lives here.

pub mod app;
pub mod dispatch;

use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};

/// The REST API version every call asks for.
pub const API_VERSION: &str = "2022-11-28";
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Headers every GitHub REST call carries.
pub fn github_headers(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        HeaderName::from_static("x-github-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    headers
}
