//! The ready-made answers to a refused request.

use http::header::CONTENT_TYPE;
use std::collections::BTreeMap;
use std::sync::Mutex;

use http::HeaderMap;

/// The JSON body of an HTTP rejection. Static, so a rejection formats nothing.
pub(crate) const HTTP_BODY: &str = r#"{"error":"license_expired","message":"The license for this service has expired and its grace period is over. Contact the vendor to renew it.","status":"unhealthy"}"#;

/// [`HTTP_BODY`], where a body can point at it.
pub(crate) static HTTP_BODY_BYTES: &[u8] = HTTP_BODY.as_bytes();

/// The `grpc-message` of a gRPC rejection: printable ASCII without `%`, so its
/// percent-encoded form is itself.
pub(crate) const GRPC_MESSAGE: &str =
    "The license for this service has expired and its grace period is over";

/// gRPC status code UNAVAILABLE.
pub(crate) const GRPC_UNAVAILABLE: &str = "14";

/// gRPC status code PERMISSION_DENIED.
pub(crate) const GRPC_PERMISSION_DENIED: &str = "7";

/// Which kind of refusal a request gets, chosen from its headers in `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 503 with a JSON body.
    Http,
    /// A gRPC trailers-only response with status UNAVAILABLE.
    Grpc,
    /// The 503 with its JSON body, carrying `grpc-status: 14` and `grpc-message` as well:
    /// for an HTTP/2 request cut before its response started, when whether it was gRPC
    /// is no longer known. A gRPC client reads the status from those headers (or, per
    /// gRPC's mapping of HTTP statuses, from the 503) as UNAVAILABLE; any other client
    /// sees the 503.
    HttpAndGrpc,
    /// 403 with a JSON body naming the feature.
    FeatureHttp(&'static FeatureText),
    /// A gRPC trailers-only response with status PERMISSION_DENIED.
    FeatureGrpc(&'static FeatureText),
    /// The 403 with its JSON body, carrying `grpc-status: 7` and the feature's
    /// `grpc-message` as well: for an HTTP/2 request a feature's drain cut before its
    /// response started (see [`Rejection::HttpAndGrpc`]).
    FeatureHttpAndGrpc(&'static FeatureText),
}

/// The fixed texts of a feature's refusal, made once per feature name for the life of
/// the process (a handful of names, each leaked once), so that refusing formats nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FeatureText {
    pub(crate) body: &'static [u8],
    pub(crate) grpc_message: &'static str,
}

impl FeatureText {
    /// The feature's `grpc-message`, percent-encoded.
    pub(crate) fn grpc_message(&self) -> &'static str {
        self.grpc_message
    }

    pub(crate) fn of(feature: &str) -> &'static FeatureText {
        static TEXTS: Mutex<BTreeMap<String, &'static FeatureText>> = Mutex::new(BTreeMap::new());
        let mut texts = TEXTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(text) = texts.get(feature) {
            return text;
        }
        let name = serde_json::Value::from(feature).to_string();
        let body = format!(
            r#"{{"error":"feature_not_licensed","feature":{name},"message":"The license for this service does not include the feature {}. Contact the vendor to add it."}}"#,
            &name[1..name.len() - 1]
        );
        let message =
            format!("The license for this service does not include the feature {feature}");
        let text: &'static FeatureText = Box::leak(Box::new(FeatureText {
            body: Box::leak(body.into_boxed_str()).as_bytes(),
            grpc_message: Box::leak(percent_encode(&message).into_boxed_str()),
        }));
        texts.insert(feature.to_owned(), text);
        text
    }
}

/// gRPC's `grpc-message` encoding: printable ASCII but `%` as is, every other byte as
/// `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Rejection {
    pub(crate) fn for_request(headers: &HeaderMap) -> Self {
        let is_grpc = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if is_grpc {
            Rejection::Grpc
        } else {
            Rejection::Http
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grpc_is_told_by_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(Rejection::for_request(&headers), Rejection::Http);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(Rejection::for_request(&headers), Rejection::Grpc);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(Rejection::for_request(&headers), Rejection::Http);
    }

    #[test]
    fn http_body_is_the_documented_json() {
        let value: serde_json::Value = serde_json::from_str(HTTP_BODY).unwrap();
        assert_eq!(value["error"], "license_expired");
        assert_eq!(value["status"], "unhealthy");
    }

    #[test]
    fn a_feature_refusal_names_the_feature_in_valid_json_and_a_valid_grpc_message() {
        let text = FeatureText::of("sso \"x\" ü%");
        let value: serde_json::Value = serde_json::from_slice(text.body).unwrap();
        assert_eq!(value["error"], "feature_not_licensed");
        assert_eq!(value["feature"], "sso \"x\" ü%");
        assert!(value["message"].as_str().unwrap().contains("sso"));
        assert!(text.grpc_message.ends_with("sso \"x\" %C3%BC%25"));
        assert!(HeaderValue::from_str(text.grpc_message).is_ok());
        // Made once per name.
        assert!(std::ptr::eq(text, FeatureText::of("sso \"x\" ü%")));
    }

    #[test]
    fn grpc_message_needs_no_percent_encoding() {
        assert!(
            GRPC_MESSAGE
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'%')
        );
    }
}
