//! Extractors, each turning bad input into an [`ApiError`](crate::error::ApiError) that names
//! the problem: who is asking (`auth`: API and node tokens, the client's address, the request
//! context, refusals), which resource (`path`: the ids in the path), and what they send
//! (`body`: query parameters and JSON bodies).

mod auth;
mod body;
mod path;

pub use auth::Auth;
pub(crate) use auth::{NodeAuth, bearer_token, client_addr, refusal, request_context};
pub use body::{JsonBody, MAX_BODY_BYTES, QueryPairs};
pub use path::PathIds;
