//! The answers the session layer produces itself.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use crate::handoff::HandoffBody;
use crate::headers;
use crate::ring::{Pod, Ring};
use crate::store::StoreError;

/// A plain-text answer carrying `x-locus-pod`.
pub(crate) fn plain(
    pod: &HeaderValue,
    status: StatusCode,
    message: String,
) -> Response<HandoffBody> {
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

/// 503 with `Retry-After` in whole seconds (at least 1).
pub(crate) fn unavailable(
    pod: &HeaderValue,
    retry_after: Duration,
    message: String,
) -> Response<HandoffBody> {
    let mut response = plain(pod, StatusCode::SERVICE_UNAVAILABLE, message);
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// 421 naming the owner (name, address if known, ring version).
pub(crate) fn misdirected(
    pod: &HeaderValue,
    owner_name: &str,
    owner: Option<&Pod>,
    ring_version: Option<u64>,
) -> Response<HandoffBody> {
    let mut response = plain(
        pod,
        StatusCode::MISDIRECTED_REQUEST,
        format!("this session is served by pod {owner_name}"),
    );
    let headers = response.headers_mut();
    if let Ok(name) = HeaderValue::from_str(owner_name) {
        headers.insert(headers::OWNER, name);
    }
    if let Some(owner) = owner
        && let Ok(address) = HeaderValue::from_str(&owner.address.to_string())
    {
        headers.insert(headers::OWNER_ADDRESS, address);
    }
    if let Some(version) = ring_version {
        headers.insert(headers::RING_VERSION, HeaderValue::from(version));
    }
    response
}

/// The answer for a store error: its status, `Retry-After` for transient
/// refusals, and for [`StoreError::Moved`] a 421 naming the new owner (with
/// its address when `ring` names it).
pub(crate) fn store_error(
    pod: &HeaderValue,
    error: &StoreError,
    ring: Option<&Ring>,
) -> Response<HandoffBody> {
    if let StoreError::Moved { owner, .. } = error {
        let address = ring.and_then(|r| {
            r.slots().iter().find_map(|slot| {
                [
                    Some(&slot.pod),
                    slot.successor.as_ref(),
                    slot.predecessor.as_ref(),
                ]
                .into_iter()
                .flatten()
                .find(|p| p.name == *owner)
            })
        });
        return misdirected(pod, owner, address, ring.map(Ring::version));
    }
    let mut response = match error.retry_after() {
        Some(retry_after) => unavailable(pod, retry_after, error.to_string()),
        None => plain(pod, error.status(), error.to_string()),
    };
    *response.status_mut() = error.status();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_their_status_and_hints() {
        let pod = HeaderValue::from_static("chat-0-a");
        let busy = StoreError::Busy {
            key: "k".into(),
            queued: 4,
            retry_after: Duration::from_millis(1500),
        };
        let r = store_error(&pod, &busy, None);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        let moved = StoreError::Moved {
            key: "k".into(),
            owner: "chat-1-b".into(),
        };
        let r = store_error(&pod, &moved, None);
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(r.headers()[headers::OWNER], "chat-1-b");
        let large = StoreError::TooLarge {
            key: "k".into(),
            size: 9,
            max: 1,
        };
        let r = store_error(&pod, &large, None);
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.headers().get(RETRY_AFTER).is_none());
    }
}
