//! What the dashboard (`coffer-dashboard`, mounted by the router) asks of the server: the
//! client's address and request context as the API's extractors find them, and the API's
//! failed-authentication limit, so a sign-in counts as an API call does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use coffer_core::RequestContext;

use crate::extract::{client_addr, request_context};
use crate::state::AppState;

#[derive(Debug)]
pub(crate) struct Guard {
    pub state: AppState,
    /// The listener serves TLS itself.
    pub tls: bool,
}

impl coffer_dashboard::SignInGuard for Guard {
    fn context(&self, parts: &Parts) -> (Option<IpAddr>, RequestContext) {
        let client = client_addr(parts, &self.state);
        (client, request_context(parts, client))
    }

    fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let wait = self.state.auth_limiter.blocked(client);
        if let (Some(_), Some(metrics)) = (wait, &self.state.metrics) {
            metrics.rate_limited(coffer_metrics::Limit::AuthFailures);
        }
        wait
    }

    fn https(&self, parts: &Parts) -> bool {
        self.tls
            || parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|peer| {
                    self.state
                        .trusted_proxies
                        .forwarded_https(peer.0.ip(), &parts.headers)
                })
    }

    fn failed(&self, client: IpAddr) -> Option<u32> {
        if let Some(metrics) = &self.state.metrics {
            metrics.auth_failure();
        }
        self.state
            .auth_limiter
            .failed(client)
            .then_some(crate::limiter::MAX_FAILURES)
    }
}
