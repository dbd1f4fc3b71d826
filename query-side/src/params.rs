//! Query parameters, read by hand so that every mistake is a problem naming the parameter:
//! an unknown name or unreadable value is a 400, a readable value out of range a 422.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use uuid::Uuid;

use crate::Problem;

/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

/// The parameters of one request, checked against the names its endpoint accepts.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>, accepted: &[&'static str]) -> Result<Params, Problem> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| Problem::malformed("query", "is not a valid query string"))?;
        let mut params = HashMap::new();
        for (name, value) in pairs {
            let Some(known) = accepted.iter().find(|a| **a == name) else {
                return Err(Problem::malformed_owned(
                    name.clone(),
                    format!(
                        "unknown parameter; this endpoint takes {}",
                        accepted.join(", ")
                    ),
                ));
            };
            if params.insert(name, value).is_some() {
                return Err(Problem::malformed(known, "given more than once"));
            }
        }
        Ok(Params(params))
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn uuid(&self, name: &'static str) -> Result<Option<Uuid>, Problem> {
        self.text(name)
            .map(|text| {
                Uuid::parse_str(text).map_err(|_| Problem::malformed(name, "must be a UUID"))
            })
            .transpose()
    }

    /// A value that must be one of `allowed`.
    pub fn one_of(&self, name: &'static str, allowed: &[&str]) -> Result<Option<String>, Problem> {
        match self.text(name) {
            None => Ok(None),
            Some(value) if allowed.contains(&value) => Ok(Some(value.to_string())),
            Some(_) => Err(Problem::out_of_range(
                name,
                format!("must be one of {}", allowed.join(", ")),
            )),
        }
    }

    /// `limit`: the page size, 1 to [`MAX_PAGE`].
    pub fn limit(&self) -> Result<i64, Problem> {
        let Some(text) = self.text("limit") else {
            return Ok(DEFAULT_PAGE);
        };
        let n: i64 = text
            .parse()
            .map_err(|_| Problem::malformed("limit", format!("{text:?} is not a whole number")))?;
        if !(1..=MAX_PAGE).contains(&n) {
            return Err(Problem::out_of_range(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        Ok(n)
    }

    /// `after`: the cursor a previous page gave.
    pub fn after(&self) -> Result<Option<i64>, Problem> {
        self.text("after").map(decode_cursor).transpose()
    }
}

/// Cursors are opaque to clients: the log position of the last row of a page.
pub fn encode_cursor(position: i64) -> String {
    B64.encode(format!("p{position}"))
}

fn decode_cursor(text: &str) -> Result<i64, Problem> {
    let bad = || Problem::malformed("after", "is not a cursor this service gave");
    let raw = B64.decode(text).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix('p')
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)
}

pub fn id_from_path(name: &'static str, text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| Problem::malformed(name, "must be a UUID"))
}
