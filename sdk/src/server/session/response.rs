//! The answers the session layer produces itself.

use http::{HeaderValue, Response, StatusCode};

use crate::handoff::HandoffBody;
use crate::ring::{Pod, Ring};
use crate::server::ownership::response as ownership_response;
pub(crate) use crate::server::ownership::response::unavailable;
use crate::store::StoreError;

/// A plain-text answer carrying `x-locus-pod` (the ownership layer's, so both layers answer
/// alike).
fn plain(pod: &HeaderValue, status: StatusCode, message: String) -> Response<HandoffBody> {
    ownership_response::plain(status, pod, message)
}

/// 421 naming the owner (name, address if known, ring version).
pub(crate) fn misdirected(
    pod: &HeaderValue,
    owner_name: &str,
    owner: Option<&Pod>,
    ring_version: Option<u64>,
) -> Response<HandoffBody> {
    ownership_response::misdirected_with_hint(
        pod,
        format!("this session is served by pod {owner_name}"),
        Some(owner_name),
        owner.map(|owner| owner.address),
        ring_version,
    )
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
        let address = ring.and_then(|r| r.slot_for_pod(owner)).and_then(|slot| {
            [
                Some(&slot.pod),
                slot.successor.as_ref(),
                slot.predecessor.as_ref(),
            ]
            .into_iter()
            .flatten()
            .find(|p| p.name == *owner)
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
    use std::time::Duration;

    use http::header::RETRY_AFTER;

    use super::*;
    use crate::headers;

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
        assert!(r.headers().get(headers::OWNER_ADDRESS).is_none());
        assert!(r.headers().get(headers::RING_VERSION).is_none());
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
