//! Waiting on conditions with a deadline, instead of sleeping.
//!
//! [`until`] polls a probe (with a short, growing interval) until it yields a value, and fails
//! with a message naming what it waited for and the last error the probe returned. Tests use
//! it for state they can only observe by asking (an HTTP answer, a file); for API objects a
//! watch (`kube::runtime::wait::await_condition`) is just as good.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// A wait that did not see its condition in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
pub struct WaitError {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub after: Duration,
    /// The probe's last error, if its last call failed.
    pub last_error: Option<String>,
}

/// Calls `probe` until it returns `Ok(Some(v))`, then returns `v`. `Ok(None)` and errors
/// mean "not yet"; after `timeout` the wait fails.
pub async fn until<T, E, F, Fut>(
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> Result<T, WaitError>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    let mut last_error;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last_error = None,
            Err(e) => last_error = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(WaitError {
                what: what.to_owned(),
                after: timeout,
                last_error,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let v = until(Duration::from_secs(5), "three calls", || {
            calls += 1;
            let n = calls;
            async move { Ok::<_, String>((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let err = until(Duration::from_millis(50), "never", || async {
            Err::<Option<()>, _>("connection refused")
        })
        .await
        .unwrap_err();
        assert_eq!(err.what, "never");
        assert!(err.to_string().contains("connection refused"), "{err}");
    }
}
