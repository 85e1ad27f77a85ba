//! Azure Batch's SharedKey request signature, as the official SDK makes
//! it: the string to sign rebuilt from what arrived (method, the raw path
//! and query, a fixed list of headers, the `ocp-` headers), HMAC-SHA256
//! with the account key's bytes, base64. Used by the Azure gateway to
//! check a request; pure, so vectors test it.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The headers signed by position, in order (an absent one is an empty
/// line).
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// What a request's signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path exactly as sent: percent-encoded, not decoded.
    pub path: &'a str,
    /// The query after `?`, as sent (may be empty).
    pub query: &'a str,
    /// Every header, name and value (names in any case).
    pub headers: &'a [(String, String)],
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case(name) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// The query's parameters as the signature takes them: decoded, empty
/// values dropped, the first of each name, names in code-point order.
pub fn signed_query(query: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t| super::percent_decode(t, true);
        let (name, value) = (decode(name), decode(value));
        if value.is_empty() || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The string an SDK signs for this request. `zero_length`: what a
/// missing Content-Length of a method with a body counts as (the Batch
/// SDK signs `0`; other Azure clients sign nothing).
pub fn string_to_sign(account: &str, r: &Signed<'_>, zero_length: &str) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&r.method.to_ascii_uppercase());
    s.push('\n');
    let bodyless = matches!(r.method.to_ascii_uppercase().as_str(), "GET" | "HEAD");
    for name in SIGNED_HEADERS {
        let value = match (header(r.headers, name), name) {
            (Some(v), "content-length") if v == "0" && !bodyless => zero_length,
            (Some(v), _) => v,
            (None, "content-length") if !bodyless => zero_length,
            (None, _) => "",
        };
        s.push_str(value);
        s.push('\n');
    }
    let mut ocp: Vec<(String, &str)> = r
        .headers
        .iter()
        .filter(|(n, v)| n.to_ascii_lowercase().contains("ocp-") && !v.is_empty())
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    ocp.sort();
    for (n, v) in ocp {
        s.push_str(&n);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(r.path);
    for (n, v) in signed_query(r.query) {
        s.push('\n');
        s.push_str(&n);
        s.push(':');
        s.push_str(&v);
    }
    s
}

/// base64(HMAC-SHA256(key, text)).
pub fn sign(key: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` (base64) signs `r` with `key`, in constant time.
/// A bodiless request may have been signed with a length of `0` or of
/// nothing: both are accepted.
pub fn verify(account: &str, key: &[u8], r: &Signed<'_>, signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    ["0", ""].iter().any(|zero| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(string_to_sign(account, r, zero).as_bytes());
        mac.verify_slice(&given).is_ok()
    })
}

/// The account key as Azure clients hold it: lote's key (hex) as bytes,
/// base64-encoded (`lote account keys` shows it).
pub fn azure_key(lote_key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(key_bytes(lote_key))
}

/// The bytes an Azure client signs with for a lote key: its hex decoded
/// (a key that is not hex signs with its text).
pub fn key_bytes(lote_key: &str) -> Vec<u8> {
    let hex = lote_key.as_bytes();
    if hex.len() % 2 == 0 && hex.iter().all(u8::is_ascii_hexdigit) {
        hex.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0))
            .collect()
    } else {
        lote_key.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const DATE: &str = "Mon, 02 Jun 2025 10:00:00 GMT";

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The SDK's own signatures (azure-batch 15.1.0), from the guide.
    #[test]
    fn the_sdks_vectors_verify() {
        let get = headers(&[("ocp-date", DATE), ("client-request-id", "x")]);
        let r = Signed {
            method: "GET",
            path: "/jobs/job%201/tasks",
            query: "api-version=2025-06-01&timeOut=30&maxresults=5&$filter=state%20eq%20%27completed%27&$select=id,state",
            headers: &get,
        };
        assert_eq!(
            string_to_sign("lote", &r, "0"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:Mon, 02 Jun 2025 10:00:00 GMT\n/lote/jobs/job%201/tasks\n$filter:state eq 'completed'\n$select:id,state\napi-version:2025-06-01\nmaxresults:5\ntimeOut:30"
        );
        assert!(verify(
            "lote",
            &key(),
            &r,
            "GiXsVKp/7iuP+ZW/dhcMwomiv8AgA7KWrfXOXYpLVlM="
        ));

        let post = headers(&[
            ("Content-Length", "41"),
            ("Content-Type", "application/json; odata=minimalmetadata"),
            ("ocp-date", DATE),
        ]);
        let r = Signed {
            method: "POST",
            path: "/pools",
            query: "api-version=2025-06-01",
            headers: &post,
        };
        assert!(verify(
            "lote",
            &key(),
            &r,
            "IQ4IVZV7oVUTvik7flBO00nEbjn9CE69adkQThOwmTk="
        ));

        let delete = headers(&[("Content-Length", "0"), ("ocp-date", DATE)]);
        let r = Signed {
            method: "DELETE",
            path: "/pools/p1",
            query: "api-version=2025-06-01",
            headers: &delete,
        };
        assert!(verify(
            "lote",
            &key(),
            &r,
            "Yx97CiflA8LHsCM5p5ukkBXVi26Hn4Gn67a+EonN75Y="
        ));
    }

    #[test]
    fn anything_changed_fails() {
        let h = headers(&[("Content-Length", "0"), ("ocp-date", DATE)]);
        let good = "Yx97CiflA8LHsCM5p5ukkBXVi26Hn4Gn67a+EonN75Y=";
        let r = |path, query, h| Signed {
            method: "DELETE",
            path,
            query,
            headers: h,
        };
        assert!(!verify(
            "lote",
            &key(),
            &r("/pools/p2", "api-version=2025-06-01", &h),
            good
        ));
        assert!(!verify(
            "lote",
            &key(),
            &r("/pools/p1", "api-version=2024-01-01", &h),
            good
        ));
        assert!(!verify(
            "other",
            &key(),
            &r("/pools/p1", "api-version=2025-06-01", &h),
            good
        ));
        let later = headers(&[
            ("Content-Length", "0"),
            ("ocp-date", "Mon, 02 Jun 2025 10:00:01 GMT"),
        ]);
        assert!(!verify(
            "lote",
            &key(),
            &r("/pools/p1", "api-version=2025-06-01", &later),
            good
        ));
        let mut other_key = key();
        other_key[0] ^= 1;
        assert!(!verify(
            "lote",
            &other_key,
            &r("/pools/p1", "api-version=2025-06-01", &h),
            good
        ));
        assert!(!verify(
            "lote",
            &key(),
            &r("/pools/p1", "api-version=2025-06-01", &h),
            "not base64!"
        ));
    }

    #[test]
    fn queries_sort_by_code_point_and_keep_the_first_value() {
        let q = signed_query("b=2&a=1&B=3&a=9&empty=&c=x+y%21");
        assert_eq!(
            q,
            [("B", "3"), ("a", "1"), ("b", "2"), ("c", "x y!")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn lote_keys_become_azure_keys() {
        let k = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert_eq!(azure_key(k), KEY);
        assert_eq!(key_bytes("not-hex"), b"not-hex");
    }
}
