//! The sample with PostgreSQL: write-back and reload through the session
//! store's persistence, and the stateless mode. Each test starts a private
//! PostgreSQL with `tests/pg.sh` (unix socket only); when PostgreSQL cannot
//! start, the test prints why and skips (set `LOCUS_REQUIRE_POSTGRES=1` to
//! make that a failure).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{TempDir, client, postgres_or_skip, start_ring_pods};
use http::StatusCode;
use locus::store::Stamp;
use locus::{Metrics, RingSource as _, headers};
use locus_examples::ledger::{Event, Ledger, LedgerRules, SessionView};
use locus_examples::loadgen::{self, LoadConfig, Stop, Target};
use locus_examples::postgres::{LedgerPersistence, PgConfig, Postgres};
use locus_examples::ring_source::RingSourceConfig;
use locus_examples::sample::{CACHE_HEADER, SampleConfig, SampleMode};

fn with_postgres(url: &str) -> impl Fn(&mut SampleConfig) {
    let url = url.to_owned();
    move |config| {
        config.mode = SampleMode::InMemory {
            postgres: Some(PgConfig::new(url.clone())),
        };
    }
}

/// The value of `name{labels}` in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_through_postgres() {
    let Some(pg) = postgres_or_skip("sessions_survive_a_restart_through_postgres") else {
        return;
    };
    let dir = TempDir::new("restart");
    let (mut pods, _ring, path) = start_ring_pods(dir.path(), 1, with_postgres(&pg.url)).await;
    let pod = pods.remove(0);
    let url = pod.url("/sessions/carol/events");
    for (seq, amount) in [(1, 10), (2, 20), (3, 30)] {
        let response = client()
            .post(&url)
            .header(headers::SESSION, "carol")
            .body(format!(r#"{{"seq": {seq}, "amount": {amount}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Shutdown writes the changed session back.
    let address = pod.address;
    let report = pod.stop().await;
    assert_eq!((report.flush.written, report.flush.failed), (1, 0));

    // The row is there with its version.
    let db = Postgres::connect(PgConfig::new(pg.url.clone()))
        .await
        .unwrap();
    let stored = db.load(b"carol").await.unwrap().unwrap();
    assert_eq!(
        (
            stored.stamp.version,
            stored.value.events,
            stored.value.total
        ),
        (3, 3, 60)
    );
    // Without the handoff member there is no ring ownership: epoch 0.
    assert_eq!(stored.stamp.epoch, 0);

    // A new process on the same address loads it on first touch (cold).
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let mut config = SampleConfig::new(common::pod_name(0), RingSourceConfig::File(path));
    with_postgres(&pg.url)(&mut config);
    let pod = common::serve(listener, config).await;
    let response = client()
        .get(pod.url("/sessions/carol"))
        .header(headers::SESSION, "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_HEADER], "cold");
    let view: SessionView = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((view.version, view.events, view.total), (3, 3, 60));
    assert_eq!(view.seqs.ranges().collect::<Vec<_>>(), [(1, 3)]);
    // A replay of an append made before the restart is still recognised.
    let response = client()
        .post(pod.url("/sessions/carol/events"))
        .header(headers::SESSION, "carol")
        .body(r#"{"seq": 2, "amount": 20}"#)
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["applied"], false);
    assert_eq!(answer["version"], 3);
    pod.stop().await;

    // The upsert never lowers a stored (epoch, version): not for a repeated,
    // late write-back, nor for a higher version from an older epoch (a pod
    // that lost the session, or crashed with the write in flight).
    let epoch = 5;
    let kept = db.load(b"carol").await.unwrap().unwrap().value;
    db.store(b"carol", Stamp::new(epoch, 3), &kept)
        .await
        .unwrap();
    let older = Ledger::default();
    db.store(b"carol", Stamp::new(epoch, 2), &older)
        .await
        .unwrap();
    db.store(b"carol", Stamp::new(epoch - 1, 9), &older)
        .await
        .unwrap();
    let held = db.load(b"carol").await.unwrap().unwrap();
    assert_eq!((held.stamp, held.value.total), (Stamp::new(epoch, 3), 60));
    // A newer epoch wins, whatever its version.
    db.store(b"carol", Stamp::new(epoch + 1, 1), &older)
        .await
        .unwrap();
    let held = db.load(b"carol").await.unwrap().unwrap();
    assert_eq!(
        (held.stamp, held.value.total),
        (Stamp::new(epoch + 1, 1), 0)
    );
    let persistence = LedgerPersistence::Postgres(db);
    assert!(
        locus::store::Persistence::<Ledger>::load(&persistence, b"nobody")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_under_pressure_write_back_and_reload_without_loss() {
    let Some(pg) = postgres_or_skip("evictions_under_pressure_write_back_and_reload_without_loss")
    else {
        return;
    };
    let dir = TempDir::new("pressure");
    let url = pg.url.clone();
    // 8 resident sessions per pod, 60 sessions over 3 pods: most requests
    // find their session evicted and reload it from PostgreSQL.
    let (pods, _ring, path) = start_ring_pods(dir.path(), 3, move |config| {
        with_postgres(&url)(config);
        config.limits = config.limits.to_builder().max_sessions(8).build().unwrap();
    })
    .await;
    let source = RingSourceConfig::File(path)
        .open(&Metrics::new())
        .await
        .unwrap();
    // One request at a time: there is always an idle session to evict, so
    // nothing is refused.
    let sequential = loadgen::run(LoadConfig {
        sessions: 60,
        concurrency: 1,
        read_percent: 20,
        stop: Stop::Requests(1000),
        ..LoadConfig::new(Target::Ring(source.watch()))
    })
    .await
    .unwrap();
    println!("{}", sequential.table());
    assert_eq!(sequential.errors, 0, "{:?}", sequential.errors_by_kind);
    assert_eq!(sequential.requests, 1000);
    // Far more cold answers than sessions: reloads after eviction.
    assert!(sequential.cache.cold > 200, "{:?}", sequential.cache);
    // Concurrent requests compete for the few slots: the store may refuse
    // some with 503 (`Full`, with Retry-After); a refused append is not
    // acknowledged, and no acknowledged one may be lost.
    let concurrent = loadgen::run(LoadConfig {
        sessions: 60,
        concurrency: 6,
        read_percent: 20,
        stop: Stop::Requests(1000),
        ..LoadConfig::new(Target::Ring(source.watch()))
    })
    .await
    .unwrap();
    println!("{}", concurrent.table());
    assert!(
        concurrent
            .errors_by_kind
            .keys()
            .all(|kind| kind == "http_503"),
        "{:?}",
        concurrent.errors_by_kind
    );
    assert!(concurrent.appends_acked > 0);
    for summary in [&sequential, &concurrent] {
        let verification = summary.verification.as_ref().unwrap();
        assert_eq!(verification.lost_writes, 0, "{verification:?}");
        assert_eq!(verification.stale_sessions, 0);
        assert_eq!(verification.sessions_unreadable, 0);
        assert_eq!(summary.version_conflicts, 0);
        assert_eq!(summary.stale_reads, 0);
    }
    let mut found = 0.0;
    let mut written = 0.0;
    for pod in &pods {
        let text = pod.service().metrics().encode();
        found += metric(&text, "locus_store_loads_total{result=\"found\"}");
        written += metric(&text, "locus_store_write_backs_total{result=\"ok\"}");
        assert!(pod.service().store().unwrap().stats().sessions <= 8);
    }
    assert!(found > 200.0, "loads from PostgreSQL: {found}");
    assert!(written > 200.0, "write-backs: {written}");
    for pod in pods {
        pod.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_mode_keeps_every_session_in_postgres() {
    let Some(pg) = postgres_or_skip("stateless_mode_keeps_every_session_in_postgres") else {
        return;
    };
    let listeners = common::listeners(2).await;
    let mut pods = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = SampleConfig {
            pod: format!("stateless-{i}"),
            mode: SampleMode::Stateless {
                postgres: PgConfig::new(pg.url.clone()),
                timeout: Duration::from_secs(5),
            },
            ring: None,
            ..SampleConfig::new("x", RingSourceConfig::File("unused".into()))
        };
        pods.push(common::serve(listener, config).await);
    }
    assert!(pods[0].service().store().is_none());
    // 4 sessions, 12 requests in flight: appends to one session run
    // concurrently and queue on its row lock.
    let summary = loadgen::run(LoadConfig {
        sessions: 4,
        concurrency: 12,
        read_percent: 20,
        prefix: "st".into(),
        stop: Stop::Requests(600),
        ..LoadConfig::new(Target::Direct(pods[0].url("")))
    })
    .await
    .unwrap();
    println!("{}", summary.table());
    assert_eq!(summary.errors, 0, "{:?}", summary.errors_by_kind);
    assert_eq!(summary.cache.stateless, summary.ok);
    assert_eq!(summary.by_pod.get("stateless-0"), Some(&summary.ok));
    assert_eq!(summary.version_conflicts, 0);
    assert_eq!(summary.stale_reads, 0);
    let verification = summary.verification.as_ref().unwrap();
    assert_eq!(verification.lost_writes, 0, "{verification:?}");
    assert_eq!(verification.acked_appends, summary.appends_acked);

    // The other pod, which served nothing, reads the same state.
    let through = |i: usize| {
        let url = pods[i].url("/sessions/st-1");
        async move {
            let response = client()
                .get(url)
                .header(headers::SESSION, "st-1")
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()[CACHE_HEADER], "stateless");
            serde_json::from_slice::<SessionView>(&response.bytes().await.unwrap()).unwrap()
        }
    };
    let (a, b) = (through(0).await, through(1).await);
    assert_eq!(a, b);
    assert!(a.version > 0);
    assert_eq!(a.events, a.version);
    // Ledger rules are applied in the transaction too.
    let rules = LedgerRules::default();
    let db = Postgres::connect(PgConfig::new(pg.url.clone()))
        .await
        .unwrap();
    let refused = db
        .append(
            b"st-1",
            Event {
                seq: None,
                kind: String::new(),
                amount: 0,
                note: None,
            },
            &rules,
        )
        .await
        .unwrap();
    assert!(refused.is_err());
    assert_eq!(
        db.load(b"st-1").await.unwrap().unwrap().stamp.version,
        a.version
    );
    for pod in pods {
        pod.stop().await;
    }
}

/// A table made before ownership epochs (no `epoch` column) gets the column
/// on connect; its rows read as epoch 0 and any owner's write replaces them.
#[tokio::test]
async fn a_table_from_before_epochs_is_migrated_in_place() {
    let Some(pg) = postgres_or_skip("a_table_from_before_epochs_is_migrated_in_place") else {
        return;
    };
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE locus_sessions (key bytea PRIMARY KEY, version bigint NOT NULL, \
             state bytea NOT NULL)",
        )
        .await
        .unwrap();
    let state = serde_json::to_vec(&Ledger {
        events: 2,
        total: 30,
        ..Ledger::default()
    })
    .unwrap();
    client
        .execute(
            "INSERT INTO locus_sessions VALUES ($1, 7, $2)",
            &[&&b"old"[..], &state],
        )
        .await
        .unwrap();
    let db = Postgres::connect(PgConfig::new(pg.url.clone()))
        .await
        .unwrap();
    let held = db.load(b"old").await.unwrap().unwrap();
    assert_eq!((held.stamp, held.value.total), (Stamp::new(0, 7), 30));
    // A new owner writes under its epoch; an older version from it wins.
    let mut ledger = held.value.clone();
    ledger.total = 31;
    db.store(b"old", Stamp::new(4, 1), &ledger).await.unwrap();
    let held = db.load(b"old").await.unwrap().unwrap();
    assert_eq!((held.stamp, held.value.total), (Stamp::new(4, 1), 31));
    // Connecting again (another pod starting) changes nothing.
    let again = Postgres::connect(PgConfig::new(pg.url.clone()))
        .await
        .unwrap();
    assert_eq!(
        again.load(b"old").await.unwrap().unwrap().stamp,
        Stamp::new(4, 1)
    );
}
