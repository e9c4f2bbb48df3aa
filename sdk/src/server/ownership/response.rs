//! The answers the ownership layer produces itself.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};

use crate::ring::Pod;
use crate::{BoxError, headers};

/// Body of a response the layer produced or relayed.
pub(crate) type LocalBody = UnsyncBoxBody<Bytes, BoxError>;

/// A plain-text answer carrying `x-locus-pod`.
pub(crate) fn plain(status: StatusCode, pod: &HeaderValue, message: String) -> Response<LocalBody> {
    let body = Full::new(Bytes::from(message))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(headers::POD, pod.clone());
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 503 with `Retry-After` (whole seconds, at least 1).
pub(crate) fn unavailable(
    pod: &HeaderValue,
    retry_after: Duration,
    message: String,
) -> Response<LocalBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, pod, message);
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// 421 with the owner hint under the ring of `version`.
pub(crate) fn misdirected(
    pod: &HeaderValue,
    pod_name: &str,
    owner: Option<&Pod>,
    version: Option<u64>,
) -> Response<LocalBody> {
    let message = match owner {
        Some(owner) => format!(
            "pod {pod_name} does not own this key under ring version {}; its owner is {} at {}",
            version.unwrap_or_default(),
            owner.name,
            owner.address
        ),
        None => format!("this request is not for pod {pod_name}"),
    };
    misdirected_with_hint(
        pod,
        message,
        owner.map(|owner| owner.name.as_str()),
        owner.map(|owner| owner.address),
        version,
    )
}

/// 421 saying `message`, with the owner hint both layers send: the owner's
/// name (`x-locus-owner`), its address (`x-locus-owner-address`) and the ring
/// version (`x-locus-ring-version`), each when known and valid as a header.
pub(crate) fn misdirected_with_hint(
    pod: &HeaderValue,
    message: String,
    owner_name: Option<&str>,
    owner_address: Option<SocketAddr>,
    version: Option<u64>,
) -> Response<LocalBody> {
    let mut response = plain(StatusCode::MISDIRECTED_REQUEST, pod, message);
    let headers = response.headers_mut();
    if let Some(name) = owner_name.and_then(|name| HeaderValue::from_str(name).ok()) {
        headers.insert(headers::OWNER, name);
    }
    if let Some(address) =
        owner_address.and_then(|address| HeaderValue::from_str(&address.to_string()).ok())
    {
        headers.insert(headers::OWNER_ADDRESS, address);
    }
    if let Some(version) = version {
        headers.insert(headers::RING_VERSION, HeaderValue::from(version));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let pod = HeaderValue::from_static("p");
        let r = unavailable(&pod, Duration::from_millis(1500), String::new());
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        let r = unavailable(&pod, Duration::ZERO, String::new());
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert_eq!(r.headers()[headers::POD], "p");
    }

    #[test]
    fn misdirected_carries_the_hint() {
        let pod = HeaderValue::from_static("chat-0-a");
        let owner = Pod {
            name: "chat-1-b".into(),
            uid: "u".into(),
            address: "[::1]:8080".parse().unwrap(),
        };
        let r = misdirected(&pod, "chat-0-a", Some(&owner), Some(9));
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(r.headers()[headers::OWNER], "chat-1-b");
        assert_eq!(r.headers()[headers::OWNER_ADDRESS], "[::1]:8080");
        assert_eq!(r.headers()[headers::RING_VERSION], "9");
        assert_eq!(r.headers()[headers::POD], "chat-0-a");
        let r = misdirected(&pod, "chat-0-a", None, Some(9));
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(r.headers().get(headers::OWNER).is_none());
        assert!(r.headers().get(headers::OWNER_ADDRESS).is_none());
        assert_eq!(r.headers()[headers::RING_VERSION], "9");
    }
}
