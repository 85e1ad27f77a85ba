//! Replies, bounded bodies, query strings and cookies: the little of HTTP
//! the console needs beyond hyper.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::api::{ApiError, ErrorKind};
use crate::domain::RejectionCode;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A reply before it becomes a response.
pub struct Reply {
    status: u16,
    headers: Vec<(HeaderName, String)>,
    body: Body,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl Reply {
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![(hyper::header::CONTENT_TYPE, content_type.to_string())],
            body: full(body),
        }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply::bytes(
            status,
            "text/plain; charset=utf-8",
            text.as_bytes().to_vec(),
        )
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::bytes(status, "application/json", body),
            Err(e) => Reply::error(500, &format!("cannot encode the reply: {e}")),
        }
    }

    /// An error as the console's pages read it: `{"error": {kind, message}}`.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            &serde_json::json!({ "error": { "kind": "http", "message": message } }),
        )
    }

    /// The API's own error, with a status that says what kind it is.
    pub fn api_error(error: &ApiError) -> Reply {
        let status = match error.kind {
            ErrorKind::BadSignature => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::Malformed | ErrorKind::TooLarge => 400,
            ErrorKind::Rejected if error.rejection == Some(RejectionCode::PermissionDenied) => 403,
            ErrorKind::Rejected if error.rejection == Some(RejectionCode::InvalidValue) => 400,
            ErrorKind::Rejected
                if error
                    .rejection
                    .is_some_and(|r| r.name().ends_with("NotFound")) =>
            {
                404
            }
            ErrorKind::Rejected | ErrorKind::RequestIdReused => 409,
            ErrorKind::Overloaded | ErrorKind::ShuttingDown => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
            _ => 400,
        };
        Reply::json(status, &serde_json::json!({ "error": error }))
    }

    pub fn redirect(to: &str) -> Reply {
        let mut r = Reply::text(302, "");
        r.headers.push((hyper::header::LOCATION, to.to_string()));
        r
    }

    /// A body that arrives as the sender sends it (downloads, the live feed).
    pub fn stream(
        content_type: &str,
        chunks: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> Reply {
        let frames = futures_util::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
        });
        Reply {
            status: 200,
            headers: vec![(hyper::header::CONTENT_TYPE, content_type.to_string())],
            body: StreamBody::new(frames).boxed_unsync(),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reply's status, headers and whole body, for keeping it; `None`
    /// if the body fails or is over `max` bytes (a stream is not kept).
    pub async fn buffered(self, max: usize) -> Option<(u16, Vec<(String, String)>, Bytes)> {
        let body = Limited::new(self.body, max)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let headers = self
            .headers
            .into_iter()
            .map(|(n, v)| (n.as_str().to_string(), v))
            .collect();
        Some((self.status, headers, body))
    }

    /// A reply made again from what `buffered` kept.
    pub fn from_parts(status: u16, headers: &[(String, String)], body: Bytes) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .filter_map(|(n, v)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, v.clone())))
                .collect(),
            body: full(body),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(self.body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = response.headers_mut();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        // The console's pages are its own: no framing by other sites, no
        // script or style from elsewhere, no guessing of content types.
        let fixed = [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            (
                "content-security-policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ];
        for (name, value) in fixed {
            h.insert(name, HeaderValue::from_static(value));
        }
        if !h.contains_key(hyper::header::CACHE_CONTROL) {
            h.insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
        }
        response
    }
}

/// The whole body, if it is at most `max` bytes.
pub async fn body(req: Request<Incoming>, max: usize) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Reply::error(
            413,
            &format!("the request body is over {max} bytes"),
        )),
        Err(e) => Err(Reply::error(
            400,
            &format!("cannot read the request body: {e}"),
        )),
    }
}

/// The query string's parameters, percent-decoded.
pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                crate::api::percent_decode(k, true),
                crate::api::percent_decode(v, true),
            )
        })
        .collect()
}

/// A cookie's value.
pub fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    /// Form encoding, as URLSearchParams writes it.
    fn decode(text: &str) -> String {
        crate::api::percent_decode(text, true)
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("%3Cscript%3E"), "<script>");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%e2%9c%93"), "✓");
        assert_eq!(decode("é%"), "é%");
        assert_eq!(decode("%é"), "%é");
    }
}
