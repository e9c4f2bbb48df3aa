//! The Locus contract: what the operator, the SDK and the tools around them must agree on, in one
//! small crate that compiles no HTTP stack and no Kubernetes client.
//!
//! * [`ring`]: who owns which key. The ring model, the ring document's JSON codec (the format of
//!   `docs/ring-format.md`, with test vectors in `contract/testdata/ring-vectors.json` for readers
//!   in other languages), the hash and the operator's deterministic planner.
//! * [`progress`]: what a pod reports about a transition: the ring versions it observed, warmed
//!   and drained, and how the sessions it took over arrived, as the pod annotations named in
//!   [`ring::annotations`], with their reading and writing.
//! * [`crd`]: the `StatefulService` custom resource (`locus.dev/v1alpha1`): its spec, its status
//!   and the schema with its validation rules.
//!
//! Who uses it:
//!
//! * the operator (`locus-operator`) plans rings, reads the pods' progress and writes the
//!   resource's status;
//! * the SDK (`locus`) reads rings and reports progress; it re-exports [`ring`] and the
//!   [`progress`] types, so `locus::ring::...` and `locus::progress::...` name the same items;
//! * `kubectl-locus` renders a service's ring, progress and status;
//! * the end-to-end tests (`locus-e2e`) read status and rings typed.
//!
//! Its dependencies are the data formats only: `serde`/`serde_json`, `k8s-openapi` and `kube`'s
//! derive for the resource types, `schemars` for their schema, `xxhash-rust` and `hashring` for
//! the ring, `base64` for its tables, `thiserror` for its errors.
//!
//! ```
//! use locus_contract::progress::Progress;
//! use locus_contract::ring::{PlanRequest, plan};
//!
//! // The operator plans a ring of three slots...
//! let first = plan(&PlanRequest::new("default", "chat", &[0, 1, 2])).unwrap();
//! assert_eq!(first.assignment.shards_of(0).count(), 1365);
//! // ...and reads what a pod reported about it from the pod's annotations.
//! let reported = Progress { observed: Some(7), ..Progress::default() };
//! let (read, unreadable) = Progress::from_annotations(&reported.to_annotations());
//! assert_eq!((read, unreadable.len()), (reported, 0));
//! ```

pub mod crd;
pub mod progress;
pub mod ring;
