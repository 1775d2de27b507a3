//! The ready-made answers to a refused request.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::body::ResponseBody;

/// The JSON body of an HTTP rejection. Static, so a rejection formats nothing.
pub(crate) const HTTP_BODY: &str = r#"{"error":"license_expired","message":"The license for this service has expired and its grace period is over. Contact the vendor to renew it.","status":"unhealthy"}"#;

/// The `grpc-message` of a gRPC rejection: printable ASCII without `%`, so its
/// percent-encoded form is itself.
pub(crate) const GRPC_MESSAGE: &str =
    "The license for this service has expired and its grace period is over";

/// gRPC status code UNAVAILABLE.
const GRPC_UNAVAILABLE: &str = "14";

/// Which kind of refusal a request gets, chosen from its headers in `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 503 with a JSON body.
    Http,
    /// A gRPC trailers-only response with status UNAVAILABLE.
    Grpc,
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

    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
        match self {
            Rejection::Http => {
                let mut response = Response::new(ResponseBody::full(HTTP_BODY.as_bytes()));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Rejection::Grpc => {
                // Trailers-only: HTTP 200, the status in the headers, and an empty body
                // that reports the end of the stream, so hyper sets END_STREAM on the
                // HEADERS frame.
                let mut response = Response::new(ResponseBody::default());
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
                headers.insert("grpc-message", HeaderValue::from_static(GRPC_MESSAGE));
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn grpc_message_needs_no_percent_encoding() {
        assert!(
            GRPC_MESSAGE
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'%')
        );
    }
}
