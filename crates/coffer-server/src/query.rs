//! Query parameters of the list and delete endpoints.

use coffer_api::ErrorCode;
use coffer_core::{
    DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE, MAX_SEARCH_BYTES, SecretListQuery, StoreListQuery,
};
use coffer_storage::{Direction, SecretOrder, StoreOrder};
use coffer_types::Scopes;

use crate::error::ApiError;
use crate::extract::QueryPairs;

fn bad(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::at(ErrorCode::InvalidQuery, name, format!("{name}: {message}"))
}

impl QueryPairs {
    /// The last value given for `name` (later values override earlier ones).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
            _ => Err(bad(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    fn direction(&self) -> Result<Direction, ApiError> {
        self.direction_or(Direction::Asc)
    }

    pub fn direction_or(&self, default: Direction) -> Result<Direction, ApiError> {
        match self.get("direction") {
            None => Ok(default),
            Some(d) if d.eq_ignore_ascii_case("asc") => Ok(Direction::Asc),
            Some(d) if d.eq_ignore_ascii_case("desc") => Ok(Direction::Desc),
            Some(_) => Err(bad("direction", "must be \"asc\" or \"desc\"")),
        }
    }

    pub fn page(&self) -> Result<(u32, u32), ApiError> {
        Ok((
            self.number("page", 1, 1, MAX_PAGE)?,
            self.number("per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)?,
        ))
    }

    pub fn stores(&self) -> Result<StoreListQuery, ApiError> {
        let (page, per_page) = self.page()?;
        let order = match self.get("order") {
            None => StoreOrder::Created,
            Some("name") => StoreOrder::Name,
            Some("created") => StoreOrder::Created,
            Some("modified") => StoreOrder::Modified,
            Some(_) => return Err(bad("order", "must be one of name, created, modified")),
        };
        Ok(StoreListQuery {
            page,
            per_page,
            order,
            direction: self.direction()?,
        })
    }

    pub fn secrets(&self) -> Result<SecretListQuery, ApiError> {
        let (page, per_page) = self.page()?;
        let order = match self.get("order") {
            None => SecretOrder::Created,
            Some("name") => SecretOrder::Name,
            Some("comment") => SecretOrder::Comment,
            Some("created") => SecretOrder::Created,
            Some("modified") => SecretOrder::Modified,
            Some("status") => SecretOrder::Status,
            Some(_) => {
                return Err(bad(
                    "order",
                    "must be one of name, comment, created, modified, status",
                ));
            }
        };
        let search = match self.get("search") {
            Some(s) if s.len() > MAX_SEARCH_BYTES => {
                return Err(bad(
                    "search",
                    format!("must be at most {MAX_SEARCH_BYTES} bytes"),
                ));
            }
            Some("") | None => None,
            Some(s) => Some(s.to_owned()),
        };
        // Scopes may come repeated (`scopes=a&scopes=b`), bracketed (`scopes[]=a`) or
        // comma-separated (`scopes=a,b`); all mean "has every one of these".
        let mut names = Vec::new();
        for (k, v) in &self.0 {
            if k == "scopes" || k == "scopes[]" {
                names.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        let scopes = Scopes::parse(&names)
            .map_err(|e| ApiError::at(ErrorCode::InvalidScope, "scopes", format!("scopes: {e}")))?;
        Ok(SecretListQuery {
            page,
            per_page,
            order,
            direction: self.direction()?,
            search,
            scopes,
        })
    }

    /// An optional id parameter.
    pub fn id<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Result<T, coffer_types::IdError>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                parse(v)
                    .map_err(|e| ApiError::at(ErrorCode::InvalidId, name, format!("{name}: {e}")))
            })
            .transpose()
    }

    /// An optional RFC 3339 date-time parameter.
    pub fn time(&self, name: &str) -> Result<Option<coffer_types::Timestamp>, ApiError> {
        self.get(name)
            .map(|v| {
                coffer_types::Timestamp::parse_rfc3339(v)
                    .ok_or_else(|| bad(name, "must be an RFC 3339 date-time"))
            })
            .transpose()
    }

    /// An optional lowercase word (an audit action or outcome).
    pub fn word(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            Some(v)
                if v.is_empty()
                    || v.len() > 64
                    || !v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                Err(bad(name, "must be a lowercase word such as \"create\""))
            }
            other => Ok(other.map(str::to_owned)),
        }
    }

    pub fn force(&self) -> Result<bool, ApiError> {
        match self.get("force") {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(_) => Err(bad("force", "must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryPairs {
        QueryPairs(form_urlencoded::parse(s.as_bytes()).into_owned().collect())
    }

    #[test]
    fn defaults_and_bounds() {
        let s = q("").stores().unwrap();
        assert_eq!(
            (s.page, s.per_page, s.order, s.direction),
            (1, 20, StoreOrder::Created, Direction::Asc)
        );
        assert_eq!(
            q("per_page=100&page=3&direction=desc&order=name")
                .stores()
                .unwrap()
                .per_page,
            100
        );
        for bad in [
            "per_page=0",
            "per_page=101",
            "page=0",
            "page=-1",
            "page=x",
            "order=id",
            "direction=up",
        ] {
            let err = q(bad).stores().unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidQuery, "{bad}");
            assert!(
                err.message.starts_with(bad.split('=').next().unwrap()),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn scopes_in_every_encoding() {
        for s in [
            "scopes=workers,ai_gateway",
            "scopes=workers&scopes=ai_gateway",
            "scopes%5B%5D=workers&scopes%5B%5D=ai_gateway",
        ] {
            assert_eq!(
                q(s).secrets().unwrap().scopes.to_strings(),
                vec!["workers", "ai_gateway"],
                "{s}"
            );
        }
        assert_eq!(
            q("scopes=nope").secrets().unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn force_flag() {
        assert!(q("force=true").force().unwrap());
        assert!(!q("").force().unwrap());
        assert_eq!(
            q("force=yes").force().unwrap_err().code,
            ErrorCode::InvalidQuery
        );
    }
}
