//! The plumbing of the proxies the tests put between an edge and its upstream: serve a router
//! on loopback, forward a request as is and read the whole answer, answer with a body (whole
//! or trickled). What a proxy does to the answer is each test file's own.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use super::{ControlPlane, http};
use coffer_edge::FeedKey;

/// A router served on 127.0.0.1:0, stopped when dropped.
pub struct Served {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(app: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served { url, task }
}

/// A request as the proxy received it: its parts, path and query, and whole body.
pub struct Asked {
    pub parts: Parts,
    pub path: String,
    pub body: Bytes,
}

pub async fn read_request(req: Request) -> Asked {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    Asked { parts, path, body }
}

/// The upstream's whole answer.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub bytes: Vec<u8>,
}

/// Sends `asked` on to `upstream` (method, path, authorization and content type); a
/// connection failure is a 502 to send back as it is.
pub async fn ask_upstream(upstream: &str, asked: &Asked) -> Result<Answer, Response> {
    let mut req = http()
        .request(
            asked.parts.method.clone(),
            format!("{upstream}{}", asked.path),
        )
        .body(asked.body.clone());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = asked.parts.headers.get(&name) {
            req = req.header(name, v.clone());
        }
    }
    let res = req
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())?;
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = res
        .bytes()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())?
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        bytes,
    })
}

/// Answers with `body`, the status and the content type.
pub fn respond(status: StatusCode, content_type: Option<HeaderValue>, body: Body) -> Response {
    let mut out = Response::new(body);
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

/// `bytes` sent one at a time, `every` apart.
pub fn trickle(bytes: Vec<u8>, every: Duration) -> Body {
    Body::from_stream(futures_util::stream::unfold(
        bytes.into_iter(),
        move |mut rest| async move {
            tokio::time::sleep(every).await;
            let byte = rest.next()?;
            Some((Ok::<_, std::io::Error>(vec![byte]), rest))
        },
    ))
}

/// A node, its token and the feed key `coffer node create` showed with it.
pub async fn node_with_key(cp: &ControlPlane, name: &str) -> (String, FeedKey) {
    let made = cp.client.create_node(name).await.unwrap();
    let key = FeedKey::parse(
        made.feed_public_key
            .as_deref()
            .expect("the control plane signs"),
    )
    .unwrap();
    (made.node_token.expose_secret().to_owned(), key)
}
