//! Seeing a session move from one pod to another, and whether the new pod
//! announced its takeover (`x-locus-takeover`), when answers to concurrent
//! requests of one session come back in another order than they were sent
//! or served.
//!
//! Two orders differ from the pods' own:
//!
//! * An answer can overtake an older one on the way back: the old owner's
//!   last answer arrives after the new owner's first. That late answer says
//!   nothing about where the session is now, so it neither counts as a move
//!   nor becomes the session's last pod.
//! * A pod announces a takeover on the first request it serves for the key;
//!   when two requests of the session reach it together, the one without the
//!   header can come back first, and the session may even move on to a third
//!   pod before the announcing answer is back (the first request at a new
//!   owner is the one that waits for the takeover). A move seen without the
//!   header is therefore held open until the phase ends and closed by an
//!   announcing answer from the same pod, whenever it arrives; only the ones
//!   still open at the end are unannounced.

/// Where one session was last seen, as answers come back.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    /// Requests sent for the session so far (the last one's ordinal).
    sent: u64,
    /// The newest request whose answer was observed.
    observed: u64,
    /// The pod that answered the newest observed request.
    last_pod: Option<Box<str>>,
    /// Pods the session moved to without an announcing answer seen yet.
    open: Vec<Box<str>>,
}

impl Moves {
    /// Numbers a request of the session as it is sent.
    pub fn send(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Records the answer from `pod` to the request numbered `ordinal`;
    /// `announced` if it carried a takeover header. True if it shows the
    /// session answered by another pod than before.
    pub fn answered(&mut self, ordinal: u64, pod: &str, announced: bool) -> bool {
        if announced && let Some(at) = self.open.iter().position(|open| &**open == pod) {
            self.open.swap_remove(at);
        }
        if ordinal < self.observed {
            return false;
        }
        self.observed = ordinal;
        match self.last_pod.as_deref() {
            Some(last) if last == pod => false,
            Some(_) => {
                if !announced {
                    self.open.push(pod.into());
                }
                self.last_pod = Some(pod.into());
                true
            }
            None => {
                self.last_pod = Some(pod.into());
                false
            }
        }
    }

    /// At the end of a phase, when every request sent has been answered or
    /// failed: the moves still without their announcement.
    pub fn close(&mut self) -> u64 {
        let open = self.open.len() as u64;
        self.open.clear();
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_with_its_header_is_announced() {
        let mut m = Moves::default();
        let a = m.send();
        assert!(!m.answered(a, "p0", false));
        let b = m.send();
        assert!(m.answered(b, "p1", true));
        assert_eq!(m.close(), 0);
    }

    #[test]
    fn a_move_never_announced_counts_at_the_end() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        let b = m.send();
        assert!(m.answered(b, "p1", false));
        let c = m.send();
        assert!(!m.answered(c, "p1", false));
        assert_eq!(m.close(), 1);
        assert_eq!(m.close(), 0, "closed once");
    }

    #[test]
    fn the_header_on_a_concurrent_answer_that_came_back_second_announces() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        // Two requests in flight; the new pod served the first one first
        // (with the header), but the second one's answer came back first.
        let first = m.send();
        let second = m.send();
        assert!(m.answered(second, "p1", false));
        assert!(!m.answered(first, "p1", true));
        assert_eq!(m.close(), 0);
    }

    #[test]
    fn the_header_from_another_pod_does_not_announce() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        let first = m.send();
        let second = m.send();
        m.answered(second, "p1", false);
        m.answered(first, "p2", true);
        assert_eq!(m.close(), 1);
    }

    #[test]
    fn a_late_answer_from_the_old_pod_is_not_a_move() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        let old = m.send();
        let new = m.send();
        assert!(m.answered(new, "p1", true));
        assert!(!m.answered(old, "p0", false));
        let next = m.send();
        assert!(!m.answered(next, "p1", false));
        assert_eq!(m.close(), 0);
    }

    #[test]
    fn moving_on_from_a_move_never_announced_leaves_it_unannounced() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        let b = m.send();
        m.answered(b, "p1", false);
        let c = m.send();
        assert!(m.answered(c, "p2", true));
        assert_eq!(m.close(), 1);
    }

    #[test]
    fn an_announcement_back_after_the_session_moved_on_still_counts() {
        let mut m = Moves::default();
        let a = m.send();
        m.answered(a, "p0", false);
        // The first request at p1 waits for the takeover (it carries the
        // header); a second one comes back first, then the session moves on
        // to p2 before the first one's answer is back.
        let first = m.send();
        let second = m.send();
        assert!(m.answered(second, "p1", false));
        let third = m.send();
        assert!(m.answered(third, "p2", true));
        assert!(!m.answered(first, "p1", true));
        assert_eq!(m.close(), 0);
    }
}
