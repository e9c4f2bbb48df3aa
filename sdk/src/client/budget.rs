//! The retry budget: how many 421 retries the router may make, as a share
//! of its recent requests plus a floor per second.
//!
//! The same rule as tower's `TpsBudget` (each request deposits, each retry
//! withdraws, deposits count for `ttl`, cut into ten windows), without its
//! mutex on every deposit: a deposit is one clock read and one atomic add;
//! only the first deposit or withdrawal of a new window rotates the windows,
//! under a lock the others do not wait for.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

/// Windows the time to live is cut into.
const WINDOWS: u32 = 10;

/// A retry budget shared by every clone of a router.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// Time zero of the window numbering.
    start: Instant,
    /// Length of one window.
    window: Duration,
    /// The window `writer` collects deposits for (windows since `start`).
    generation: AtomicU64,
    /// Deposits (minus withdrawals) of the current window.
    writer: AtomicIsize,
    /// The previous windows' balances (the current one's slot is zero).
    slots: Box<[AtomicIsize]>,
    /// Held while the windows rotate.
    rotating: Mutex<()>,
    /// Balance always available (the floor per second times the ttl).
    reserve: isize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

impl RetryBudget {
    /// Deposits count for `ttl` (1 to 60 s); `min_per_sec` retries per
    /// second are always allowed, plus `retry_percent` of the requests (0.2
    /// = 20 %, 0 to 1000). The caller clamps the values.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        reason = "the same arithmetic as tower's TpsBudget on clamped values"
    )]
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let (deposit_amount, withdraw_amount) = if retry_percent <= 0.0 {
            (0, 1)
        } else if retry_percent <= 1.0 {
            (1, (1.0 / retry_percent) as isize)
        } else {
            (1000, (1000.0 / retry_percent) as isize)
        };
        let reserve = (min_per_sec as isize)
            .saturating_mul(ttl.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        Self {
            start: Instant::now(),
            window: (ttl / WINDOWS).max(Duration::from_millis(1)),
            generation: AtomicU64::new(0),
            writer: AtomicIsize::new(0),
            slots: (0..WINDOWS).map(|_| AtomicIsize::new(0)).collect(),
            rotating: Mutex::new(()),
            reserve,
            deposit_amount,
            withdraw_amount,
        }
    }

    /// Counts one request.
    pub(crate) fn deposit(&self) {
        if self.deposit_amount == 0 {
            return;
        }
        self.rotate();
        self.writer.fetch_add(self.deposit_amount, Ordering::AcqRel);
    }

    /// Takes one retry from the budget, if it has one.
    pub(crate) fn withdraw(&self) -> bool {
        self.rotate();
        let balance = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .fold(self.writer.load(Ordering::Acquire), isize::saturating_add)
            .saturating_add(self.reserve);
        if balance >= self.withdraw_amount {
            self.writer
                .fetch_sub(self.withdraw_amount, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Moves to the window of now if time has passed on: commits the
    /// current window's balance to its slot and clears the expired ones.
    fn rotate(&self) {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let now = u64::try_from(elapsed.as_nanos() / self.window.as_nanos()).unwrap_or(u64::MAX);
        if self.generation.load(Ordering::Acquire) >= now {
            return;
        }
        let _rotating = match self.rotating.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another caller is rotating: count in whichever window it leaves.
            Err(TryLockError::WouldBlock) => return,
        };
        let generation = self.generation.load(Ordering::Acquire);
        if generation >= now {
            return;
        }
        let windows = u64::from(WINDOWS);
        let slot = |g: u64| &self.slots[usize::try_from(g % windows).unwrap_or(0)];
        slot(generation).store(self.writer.swap(0, Ordering::AcqRel), Ordering::Release);
        // Windows skipped over, up to all of them, and the new current one
        // (its slot held the window that just expired) start empty.
        for g in (generation + 1)..=now.min(generation + windows) {
            slot(g).store(0, Ordering::Release);
        }
        self.generation.store(now, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_budget_refuses() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0);
        assert!(!budget.withdraw());
        let none = RetryBudget::new(Duration::from_secs(10), 0, 0.0);
        none.deposit();
        assert!(!none.withdraw());
    }

    #[test]
    fn the_floor_allows_min_per_sec_times_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(2), 3, 0.2);
        let allowed = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(allowed, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_allow_their_share_and_expire() {
        // 50 %: two requests allow one retry.
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 0.5);
        budget.deposit();
        budget.deposit();
        tokio::time::advance(Duration::from_millis(901)).await;
        assert!(budget.withdraw());
        assert!(!budget.withdraw());

        budget.deposit();
        budget.deposit();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!budget.withdraw(), "deposits older than the ttl expired");

        budget.deposit();
        tokio::time::advance(Duration::from_millis(301)).await;
        budget.deposit();
        tokio::time::advance(Duration::from_millis(501)).await;
        assert!(budget.withdraw(), "deposits within the ttl count");
    }
}
