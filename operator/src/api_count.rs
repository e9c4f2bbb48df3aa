//! Counts the requests the operator sends to the API server, by verb and resource
//! (`locus_operator_api_requests_total{verb,resource}`): a tower layer around the kube
//! [`Client`]'s service.
//!
//! The verb is the Kubernetes one (`get`, `list`, `watch`, `create`, `update`, `patch`,
//! `apply`, `delete`, `deletecollection`), derived from the HTTP method, whether the path
//! names one object, the `watch` query parameter and, for a PATCH, the content type (a
//! server-side apply is `apply`). The resource is the plural name in the path, with the
//! subresource if any (`pods`, `configmaps`, `statefulservices/status`, `leases`, ...).
//! Namespaces and object names are never labels: the label set stays small.
//!
//! ```
//! # async fn doc(client: kube::Client) {
//! use std::sync::Arc;
//! use locus_operator::api_count::counted;
//! use locus_operator::metrics::Metrics;
//!
//! let metrics = Arc::new(Metrics::new());
//! let client = counted(client, metrics.clone());
//! // Every request `client` sends now shows up in `metrics.encode()`.
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use kube::Client;
use kube::client::Body;
use tower::{Layer, Service};

use crate::metrics::{ApiRequestLabels, Metrics};

/// The verb and resource of a request to the API server.
pub fn classify<B>(request: &Request<B>) -> ApiRequestLabels {
    let path = request.uri().path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`; anything else (discovery, `/version`)
    // has no resource.
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // `namespaces/<ns>/<resource>...` is namespaced; `namespaces[/<name>]` alone is the
    // namespaces resource itself.
    let rest = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => {
            let mut r = vec![*resource];
            r.extend_from_slice(tail);
            r
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => (String::from("other"), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let apply = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
    let verb = match *request.method() {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if apply => "apply",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    ApiRequestLabels { verb, resource }
}

/// Counts every request into [`Metrics::api_requests`].
#[derive(Clone, Debug)]
pub struct ApiCountLayer {
    metrics: Arc<Metrics>,
}

impl ApiCountLayer {
    /// A layer counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ApiCountLayer {
    type Service = ApiCount<S>;
    fn layer(&self, inner: S) -> ApiCount<S> {
        ApiCount {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ApiCountLayer`] builds: counts, then passes the request on unchanged.
#[derive(Clone, Debug)]
pub struct ApiCount<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> ApiCount<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ApiCount<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.metrics
            .api_requests
            .get_or_create(&classify(&request))
            .inc();
        self.inner.call(request)
    }
}

/// `client`, with every request it sends counted into `metrics` (same default namespace,
/// same connection: the requests go through `client` itself).
pub fn counted(client: Client, metrics: Arc<Metrics>) -> Client {
    let namespace = client.default_namespace().to_owned();
    let send = tower::service_fn(move |request: Request<Body>| {
        let client = client.clone();
        async move { client.send(request).await }
    });
    Client::new(ApiCountLayer::new(metrics).layer(send), namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, uri: &str, content_type: Option<&str>) -> (&'static str, String) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, t);
        }
        let l = classify(&builder.body(()).unwrap());
        (l.verb, l.resource)
    }

    /// Requests as the operator sends them: method, path and query, content type, and the
    /// expected verb and resource.
    const CASES: &[(Method, &str, Option<&str>, &str, &str)] = &[
        (
            Method::GET,
            "/api/v1/namespaces/shop/pods?labelSelector=locus.dev%2Fservice%3Dchat",
            None,
            "list",
            "pods",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/shop/pods?watch=true&resourceVersion=12",
            None,
            "watch",
            "pods",
        ),
        (
            Method::GET,
            "/api/v1/pods?&watch=true&timeoutSeconds=290",
            None,
            "watch",
            "pods",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/shop/configmaps/chat-ring",
            None,
            "get",
            "configmaps",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/shop/configmaps/chat-ring?&force=true&fieldManager=locus-operator",
            Some("application/apply-patch+yaml"),
            "apply",
            "configmaps",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/shop/pods/chat-0-abc",
            Some("application/strategic-merge-patch+json"),
            "patch",
            "pods",
        ),
        (
            Method::PATCH,
            "/apis/locus.dev/v1alpha1/namespaces/shop/statefulservices/chat/status?&force=true",
            Some("application/apply-patch+yaml"),
            "apply",
            "statefulservices/status",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/shop/secrets?&fieldManager=locus-operator",
            None,
            "create",
            "secrets",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/shop/pods/chat-1-xyz",
            None,
            "delete",
            "pods",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/shop/pods?labelSelector=a",
            None,
            "deletecollection",
            "pods",
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/locus-system/leases/locus-operator",
            None,
            "update",
            "leases",
        ),
        (
            Method::GET,
            "/apis/locus.dev/v1alpha1/statefulservices?&watch=true",
            None,
            "watch",
            "statefulservices",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/shop",
            None,
            "get",
            "namespaces",
        ),
        (Method::GET, "/version", None, "list", "other"),
    ];

    #[test]
    fn verbs_and_resources_are_the_kubernetes_ones() {
        for (method, uri, content_type, verb, resource) in CASES {
            assert_eq!(
                labels(method.clone(), uri, *content_type),
                (*verb, (*resource).to_owned()),
                "{method} {uri}"
            );
        }
    }

    #[tokio::test]
    async fn every_request_is_counted_once_and_passed_on() {
        let metrics = Arc::new(Metrics::new());
        let inner = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(request.uri().path().to_owned())
        });
        let mut service = ApiCountLayer::new(metrics.clone()).layer(inner);
        for _ in 0..3 {
            let request = Request::get("/api/v1/namespaces/shop/pods?labelSelector=x")
                .body(())
                .unwrap();
            let answer = tower::ServiceExt::oneshot(&mut service, request)
                .await
                .unwrap();
            assert_eq!(answer, "/api/v1/namespaces/shop/pods");
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"locus_operator_api_requests_total{verb="list",resource="pods"} 3"#),
            "{text}"
        );
    }
}
