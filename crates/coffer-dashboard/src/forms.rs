//! Form bodies and query strings (`application/x-www-form-urlencoded`), in order. Every value
//! is held zeroizing: a form may carry a secret's value or an API token.

use zeroize::Zeroizing;

pub(crate) struct Form(Vec<(String, Zeroizing<String>)>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
        )
    }

    pub(crate) fn query(query: Option<&str>) -> Form {
        Form::parse(query.unwrap_or_default().as_bytes())
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Takes the first value of `key` out of the form.
    pub(crate) fn take(&mut self, key: &str) -> Option<Zeroizing<String>> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// Takes a `<textarea>`'s value: a browser submits its line breaks as CRLF whatever was
    /// typed or pasted (the field itself holds LF), so each CRLF becomes LF again and the value
    /// stored is the one the field showed.
    pub(crate) fn take_text(&mut self, key: &str) -> Option<Zeroizing<String>> {
        self.take(key).map(|v| {
            if v.contains("\r\n") {
                Zeroizing::new(v.replace("\r\n", "\n"))
            } else {
                v
            }
        })
    }

    /// A `<textarea>`'s value that is not secret (a comment), its CRLFs made LF as in
    /// [`Form::take_text`].
    pub(crate) fn get_text(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| v.replace("\r\n", "\n"))
    }

    /// The row indices of the fields named `prefix-N`, ascending and distinct.
    pub(crate) fn rows(&self, prefix: &str) -> Vec<usize> {
        let mut rows: Vec<usize> = self
            .0
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok())
            .collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_in_order_and_hides_values() {
        let mut f = Form::parse(b"a=1&b=x%3Cy&a=2&name-3=n&name-0=m&name-x=z");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(f.get("b"), Some("x<y"));
        assert_eq!(f.rows("name"), [0, 3]);
        assert_eq!(f.take("a").as_deref().map(String::as_str), Some("1"));
        assert_eq!(f.get("a"), Some("2"));
        assert!(!format!("{f:?}").contains("x<y"));
    }
}
