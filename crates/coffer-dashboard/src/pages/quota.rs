//! The quota page: the account's secrets quota and usage, as the API's quota endpoint gives
//! them (`Coffer::quota`, `account:read`: every role).

use askama::Template;

use super::*;

#[derive(Template, Debug)]
#[template(path = "quota.html")]
pub(crate) struct QuotaPage {
    pub layout: Layout,
    pub quota: u64,
    pub usage: u64,
    pub left: u64,
    /// The meter's thresholds: 80 % and 95 % of the quota.
    pub low: u64,
    pub high: u64,
}

/// `GET /quota`
pub(crate) async fn quota(axum::extract::State(d): State, s: Signed) -> Response {
    let q = match d.coffer.quota(&s.who, s.who.account_id).await {
        Ok(q) => q,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    page(
        StatusCode::OK,
        &QuotaPage {
            layout: layout_at("Quota".to_owned(), "quota", &s),
            quota: q.quota,
            usage: q.usage,
            left: q.quota.saturating_sub(q.usage),
            low: q.quota.saturating_mul(8) / 10,
            high: q.quota.saturating_mul(19) / 20,
        },
    )
}
