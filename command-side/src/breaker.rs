//! A circuit breaker for calls to the payment service: after repeated failures it opens and
//! fails calls at once; after a while it lets one trial call through, and closes again when
//! that succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is under way.
    HalfOpen,
}

/// The breaker refuses the call: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to make a call.
    pub fn admit(&self) -> Result<(), Open> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(())
                } else {
                    Err(Open {
                        retry_after: until - now,
                    })
                }
            }
            State::HalfOpen => Err(Open {
                retry_after: self.open_for,
            }),
        }
    }

    pub fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Closed { failures: 0 };
        metrics::gauge!("payment_breaker_open").set(0.0);
    }

    pub fn failed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => {
                // 1 while calls to payment are refused without being tried.
                metrics::gauge!("payment_breaker_open").set(1.0);
                State::Open {
                    until: Instant::now() + self.open_for,
                }
            }
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_recovers_through_one_trial() {
        let breaker = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            breaker.admit().unwrap();
            breaker.failed();
        }
        assert!(!breaker.is_open());
        breaker.admit().unwrap();
        breaker.failed();
        assert!(breaker.admit().is_err(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().expect("one trial after the pause");
        assert!(breaker.admit().is_err(), "only one trial at a time");
        breaker.succeeded();
        assert!(breaker.admit().is_ok() && !breaker.is_open());
        // A failed trial opens it again.
        for _ in 0..3 {
            breaker.failed();
        }
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().unwrap();
        breaker.failed();
        assert!(breaker.admit().is_err());
    }
}
