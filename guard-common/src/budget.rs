//! Blast-radius budgets: at most N destructive calls (or connects) of one
//! agent per window, then ask, deny or freeze. The rule lives here, once:
//! the kernel programs and the seccomp supervisor both call [`step`] on the
//! same map cell, so a budget means the same on every backend.
//!
//! A window opens at the first counted call after the previous one ended
//! and lasts the budget's period; within it at most `limit` calls run.
//! (Not aligned to the clock: an `rm -rf` that starts just before a
//! minute boundary still gets exactly `limit`, not twice that.)
//!
//! The whole state is one u64, so the kernel updates it with one
//! compare-and-exchange and no lock: the window's start in milliseconds
//! of CLOCK_BOOTTIME (42 bits, 139 years) and the count in it (22 bits).
//! The count stops at `limit + 1`: the one call that finds it at `limit`
//! is the exhaustion, reported once; later ones find it past and are not.

use crate::abi::stable_enum;

stable_enum! {
    /// What a call over budget gets (`on_exceed` in the policy).
    Exceed: u8 {
        /// Held for a human, even where a rule allows it.
        Ask = 1,
        /// Refused with EPERM until the window ends.
        Deny = 2,
        /// Held, and the agent is switched to freeze mode until thawed.
        Freeze = 3,
    }
}

stable_enum! {
    /// Which of an agent's budgets a call draws on; part of the map key.
    BudgetClass: u32 {
        /// unlink, rmdir, rename, truncate (every destructive file call).
        Deletes = 1,
        /// connects and datagram destinations (IPv4/IPv6; not unix sockets).
        Connects = 2,
    }
}

/// Largest `limit` a budget may have (the count's 22 bits, less the
/// exhaustion mark). `policy check` enforces it.
pub const BUDGET_MAX_LIMIT: u32 = (1 << COUNT_BITS) - 2;
const COUNT_BITS: u32 = 22;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Key of the `BUDGETS` hash map: one budget of one agent. Keyed by the
/// agent id, so every run and adopted cgroup of the agent draws on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    pub agent_id: u32,
    /// [`BudgetClass`] as a number.
    pub class: u32,
}
const _: () = assert!(core::mem::size_of::<BudgetKey>() == 8);

/// Value of the `BUDGETS` map. The daemon writes the limit and period; the
/// kernel (or the supervisor, for the calls it decides) updates `state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetCell {
    /// Window start (ms) << 22 | count; see the module comment.
    pub state: u64,
    pub limit: u32,
    /// Window length in milliseconds; never 0 in the map.
    pub period_ms: u32,
    /// [`Exceed`] as a number.
    pub on_exceed: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<BudgetCell>() == 24);

/// What the budget says about one call that would otherwise run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// No budget, or a grant lifts it: not counted.
    Free,
    /// Counted, and within the budget.
    Within,
    /// Over budget: the `Exceed` number; `first` for the one call that
    /// exhausted this window (the one that reports it).
    Over { action: u8, first: bool },
}

/// The state after one more call at `now_ms`, and what that call gets.
/// Pure, so the kernel can retry it in a compare-and-exchange loop.
#[inline(always)]
pub const fn step(state: u64, now_ms: u64, limit: u32, period_ms: u32) -> (u64, Taken) {
    let start = state >> COUNT_BITS;
    let count = state & COUNT_MASK;
    let limit = limit as u64;
    let ended = count == 0 || now_ms.saturating_sub(start) >= period_ms as u64;
    if ended {
        // A new window opens with this call.
        return if limit == 0 {
            (encode(now_ms, 1), Taken::First)
        } else {
            (encode(now_ms, 1), Taken::Within(1))
        };
    }
    if count < limit {
        (state + 1, Taken::Within(count as u32 + 1))
    } else if count == limit {
        (state + 1, Taken::First)
    } else {
        (state, Taken::Past)
    }
}

/// One call's share of a window, from [`step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Within the limit: the call's number in the window.
    Within(u32),
    /// The first call over the limit in this window.
    First,
    /// Over, and already reported.
    Past,
}

#[inline(always)]
const fn encode(start_ms: u64, count: u64) -> u64 {
    (start_ms << COUNT_BITS) | (count & COUNT_MASK)
}

/// Calls counted in the window that is open at `now_ms` (0 once it has
/// ended), capped at the limit: what `agents` shows as used.
pub const fn used(cell: &BudgetCell, now_ms: u64) -> u32 {
    let start = cell.state >> COUNT_BITS;
    let count = cell.state & COUNT_MASK;
    if count == 0 || now_ms.saturating_sub(start) >= cell.period_ms as u64 {
        0
    } else if count > cell.limit as u64 {
        cell.limit
    } else {
        count as u32
    }
}

/// Whether the open window at `now_ms` is exhausted.
pub const fn exhausted(cell: &BudgetCell, now_ms: u64) -> bool {
    let count = cell.state & COUNT_MASK;
    used(cell, now_ms) == cell.limit && count > cell.limit as u64
}

/// The `CALL_*` record bits of a call its budget stopped (0 otherwise).
#[inline(always)]
pub const fn record_flags(charge: Charge) -> u8 {
    match charge {
        Charge::Over { first: true, .. } => crate::CALL_BUDGET | crate::CALL_BUDGET_EXHAUSTED,
        Charge::Over { first: false, .. } => crate::CALL_BUDGET,
        Charge::Free | Charge::Within => 0,
    }
}

/// What a taken share means for the call.
#[inline(always)]
pub const fn charge(taken: Taken, on_exceed: u8) -> Charge {
    match taken {
        Taken::Within(_) => Charge::Within,
        Taken::First => Charge::Over {
            action: on_exceed,
            first: true,
        },
        Taken::Past => Charge::Over {
            action: on_exceed,
            first: false,
        },
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers with explicit padding.
    unsafe impl aya::Pod for BudgetKey {}
    unsafe impl aya::Pod for BudgetCell {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut u64, now: u64, limit: u32, period: u32) -> Taken {
        let (next, taken) = step(*state, now, limit, period);
        *state = next;
        taken
    }

    #[test]
    fn exactly_limit_then_one_exhaustion_then_past() {
        let mut s = 0;
        for i in 1..=40 {
            assert_eq!(run(&mut s, 1_000 + i, 40, 60_000), Taken::Within(i as u32));
        }
        assert_eq!(run(&mut s, 2_000, 40, 60_000), Taken::First);
        for _ in 0..100 {
            assert_eq!(run(&mut s, 3_000, 40, 60_000), Taken::Past);
        }
        let cell = BudgetCell {
            state: s,
            limit: 40,
            period_ms: 60_000,
            ..Default::default()
        };
        assert_eq!(used(&cell, 3_000), 40);
        assert!(exhausted(&cell, 3_000));
    }

    #[test]
    fn the_window_opens_at_the_first_call_not_on_the_clock() {
        let mut s = 0;
        // Start 10 ms before a "minute boundary": still one window.
        for _ in 0..3 {
            run(&mut s, 59_990, 3, 60_000);
        }
        assert_eq!(run(&mut s, 60_010, 3, 60_000), Taken::First);
        // A full period after the window opened: it refills.
        assert_eq!(run(&mut s, 59_990 + 60_000, 3, 60_000), Taken::Within(1));
        let cell = BudgetCell {
            state: s,
            limit: 3,
            period_ms: 60_000,
            ..Default::default()
        };
        assert_eq!(used(&cell, 59_990 + 60_000), 1);
        assert_eq!(used(&cell, 59_990 + 120_000), 0, "ended");
    }

    #[test]
    fn a_zero_limit_refuses_the_first_call() {
        let mut s = 0;
        assert_eq!(run(&mut s, 5, 0, 1_000), Taken::First);
        assert_eq!(run(&mut s, 6, 0, 1_000), Taken::Past);
    }

    #[test]
    fn the_count_never_runs_past_the_mark() {
        let limit = BUDGET_MAX_LIMIT;
        let mut s = encode(7, limit as u64);
        assert_eq!(run(&mut s, 8, limit, 1_000), Taken::First);
        assert_eq!(run(&mut s, 9, limit, 1_000), Taken::Past);
        assert_eq!(s >> COUNT_BITS, 7, "the start is untouched");
    }

    #[test]
    fn charges() {
        assert_eq!(charge(Taken::Within(3), Exceed::Deny.raw()), Charge::Within);
        assert_eq!(
            charge(Taken::First, Exceed::Ask.raw()),
            Charge::Over {
                action: Exceed::Ask.raw(),
                first: true
            }
        );
    }
}
