//! The CLI's side of the HTTP API: typed calls, and errors turned into
//! messages that say what to do. A 4xx answer is the user's input being
//! wrong (exit 2); anything else is the node or the network (exit 1).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::BadInput;
use crate::node::views::ErrorView;
use crate::web::ACTION_HEADER;

/// A client of one node's API.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BadInput(format!(
                "--api `{base}` must be an http:// URL, e.g. http://127.0.0.1:7878"
            ))
            .into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Api { base, token, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the node is on this machine (so paths mean the same to both).
    pub fn is_local(&self) -> bool {
        let rest = self
            .base
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let host = rest.split(['/', ':']).next().unwrap_or("");
        matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "") || rest.starts_with("[::1]")
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base));
        if method == Method::POST {
            rb = rb.header(ACTION_HEADER, "1");
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.json()
            .await
            .context("the node's answer is not the JSON this CLI expects")
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        resp.json()
            .await
            .context("the node's answer is not the JSON this CLI expects")
    }

    pub async fn post_multipart<T: DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).multipart(form))
            .await?;
        resp.json()
            .await
            .context("the node's answer is not the JSON this CLI expects")
    }

    /// The node's Prometheus metrics (`/metrics`, beside the API).
    pub async fn metrics(&self) -> Result<String> {
        let mut rb = self.http.get(format!("{}/metrics", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        Ok(self.send(rb).await?.text().await?)
    }

    /// A raw GET, for downloads.
    pub async fn get_raw(&self, path: &str) -> Result<reqwest::Response> {
        self.send(self.request(Method::GET, path)).await
    }

    async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "no node answers at {}: start one with `swarm node`, or point --api (or SWARM_API) at a running node",
                    self.base
                )
            } else {
                anyhow!("talking to the node at {}: {e}", self.base)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorView>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("{status}: {}", text.trim()));
        if status == StatusCode::UNAUTHORIZED || status.is_client_error() {
            return Err(BadInput(message).into());
        }
        Err(anyhow!("the node failed: {message}"))
    }
}
