//! The stylesheet, the script and the icon, compiled into the binary. Served `no-store` like every
//! dashboard response: they are small, and a stale copy can never meet a newer page.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(crate) const CSS_PATH: &str = "/assets/dashboard.css";
pub(crate) const JS_PATH: &str = "/assets/dashboard.js";
pub(crate) const ICON_PATH: &str = "/assets/favicon.svg";

const CSS: &str = include_str!("../assets/dashboard.css");
const JS: &str = include_str!("../assets/dashboard.js");
const ICON: &str = include_str!("../assets/favicon.svg");

pub(crate) async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

pub(crate) async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

pub(crate) async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response()
}
