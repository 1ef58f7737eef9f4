//! The breaker's state machine, shared by every clone of one breaker.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::window::Window;
use super::{BreakerConfig, BreakerState};
use crate::Rejection;
use crate::classify::Outcome;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
struct Machine {
    state: State,
    /// Bumped on every transition, so results of calls admitted in an earlier state are ignored.
    generation: u64,
    consecutive_failures: u32,
    window: Window,
}

/// `closed_generation` while the breaker is open or half-open.
const NOT_CLOSED: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Shared {
    name: Arc<str>,
    config: BreakerConfig,
    /// Mirror of `machine.state` for lock-free reads by metrics.
    state: AtomicU8,
    /// The generation while closed, [`NOT_CLOSED`] otherwise: admits closed-state calls
    /// without the lock (one atomic load gives a consistent state and generation).
    closed_generation: AtomicU64,
    machine: Mutex<Machine>,
}

/// Admission to call the dependency; records the call's outcome exactly once.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    probe: bool,
    deadline: Option<Instant>,
    done: bool,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(name: Arc<str>, config: BreakerConfig) -> Self {
        let window = Window::new(config.window);
        Self {
            name,
            config,
            state: AtomicU8::new(BreakerState::Closed as u8),
            closed_generation: AtomicU64::new(0),
            machine: Mutex::new(Machine {
                state: State::Closed,
                generation: 0,
                consecutive_failures: 0,
                window,
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a call or rejects it fast. `deadline` lets a call dropped at its deadline count as
    /// a failure.
    pub(crate) fn admit(self: &Arc<Self>, deadline: Option<Instant>) -> Result<Permit, Rejection> {
        // Closed: nothing to decide, so no lock. A transition racing this load bumps the
        // generation, and the permit's outcome is then ignored like that of any call admitted
        // just before the transition.
        let generation = self.closed_generation.load(Ordering::Acquire);
        if generation != NOT_CLOSED {
            return Ok(Permit {
                shared: self.clone(),
                generation,
                probe: false,
                deadline,
                done: false,
            });
        }
        let now = Instant::now();
        let mut m = self.lock();
        if let State::Open { until } = m.state {
            if now < until {
                return Err(Rejection::CircuitOpen);
            }
            self.transition(
                &mut m,
                State::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
            );
        }
        let probe = match &mut m.state {
            State::Closed => false,
            State::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_probes => {
                *in_flight += 1;
                true
            }
            State::HalfOpen { .. } | State::Open { .. } => return Err(Rejection::CircuitOpen),
        };
        Ok(Permit {
            shared: self.clone(),
            generation: m.generation,
            probe,
            deadline,
            done: false,
        })
    }

    fn record(&self, generation: u64, probe: bool, outcome: Option<Outcome>) {
        let now = Instant::now();
        let mut m = self.lock();
        if m.generation != generation {
            return;
        }
        match (m.state, outcome) {
            (
                State::HalfOpen {
                    in_flight,
                    successes,
                },
                outcome,
            ) if probe => {
                let in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Some(Outcome::Failure) => self.open(&mut m, now),
                    Some(Outcome::Success) if successes + 1 >= self.config.close_after => {
                        self.transition(&mut m, State::Closed);
                    }
                    Some(Outcome::Success) => {
                        m.state = State::HalfOpen {
                            in_flight,
                            successes: successes + 1,
                        };
                    }
                    None => {
                        m.state = State::HalfOpen {
                            in_flight,
                            successes,
                        }
                    }
                }
            }
            (State::Closed, Some(outcome)) => self.record_closed(&mut m, now, outcome),
            _ => {}
        }
    }

    fn record_closed(&self, m: &mut Machine, now: Instant, outcome: Outcome) {
        let failed = outcome == Outcome::Failure;
        let (calls, failures) = m.window.record(now, failed);
        if !failed {
            m.consecutive_failures = 0;
            return;
        }
        m.consecutive_failures += 1;
        let cfg = &self.config;
        let rate_tripped =
            calls >= cfg.min_calls && f64::from(failures) >= cfg.failure_rate * f64::from(calls);
        if m.consecutive_failures >= cfg.consecutive_failures || rate_tripped {
            self.open(m, now);
        }
    }

    fn open(&self, m: &mut Machine, now: Instant) {
        let until = now + self.config.open_timeout;
        self.transition(m, State::Open { until });
    }

    fn transition(&self, m: &mut Machine, to: State) {
        let from = BreakerState::of(m.state);
        let to_public = BreakerState::of(to);
        m.state = to;
        m.generation += 1;
        m.consecutive_failures = 0;
        m.window.reset();
        self.state.store(to_public as u8, Ordering::Relaxed);
        let closed_generation = match to {
            State::Closed => m.generation,
            State::Open { .. } | State::HalfOpen { .. } => NOT_CLOSED,
        };
        self.closed_generation
            .store(closed_generation, Ordering::Release);
        if to_public == BreakerState::Open {
            tracing::warn!(dependency = %self.name, ?from, to = ?to_public, "circuit breaker opened");
        } else {
            tracing::info!(dependency = %self.name, ?from, to = ?to_public, "circuit breaker state changed");
        }
    }
}

// === impl BreakerState ===

impl BreakerState {
    fn of(state: State) -> Self {
        match state {
            State::Closed => Self::Closed,
            State::Open { .. } => Self::Open,
            State::HalfOpen { .. } => Self::HalfOpen,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

// === impl Permit ===

impl Permit {
    /// Records the outcome of the call this permit admitted.
    pub(crate) fn finish(mut self, outcome: Option<Outcome>) {
        self.done = true;
        self.shared.record(self.generation, self.probe, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped before an answer: if the deadline passed, the dependency was too slow (counts
        // like DEADLINE_EXCEEDED); otherwise the caller gave up, which says nothing.
        let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
        let outcome = timed_out.then_some(Outcome::Failure);
        self.shared.record(self.generation, self.probe, outcome);
    }
}
