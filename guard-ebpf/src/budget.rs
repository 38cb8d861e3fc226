//! Charging a call to its agent's budget (guard_common::budget has the
//! rule). One compare-and-exchange on the agent's map cell per counted
//! call: no lock, no round trip to the daemon, and every CPU and every
//! run of the agent draws on the same cell.
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use guard_common::{BudgetKey, Charge};

use crate::maps::BUDGETS;

/// Attempts at the exchange before giving up. Each failure means another
/// CPU counted a call of the same agent meanwhile; past this many the call
/// is counted as over budget (fail closed) rather than looping.
const TRIES: u32 = 8;

/// Charges one call of class `class` (a guard_common::BudgetClass number,
/// 0 for calls no budget counts) to `agent_id`'s budget. `lifted` says
/// whether a live grant covers the call: an approval with a scope lifts
/// the budget for what it covers.
#[inline(always)]
pub fn charge<L: Fn() -> u32>(agent_id: u32, class: u32, lifted: &L) -> Charge {
    if class == 0 {
        return Charge::Free;
    }
    let key = BudgetKey { agent_id, class };
    let Some(cell) = BUDGETS.get_ptr_mut(key) else {
        return Charge::Free;
    };
    if lifted() != 0 {
        return Charge::Free;
    }
    // SAFETY: `cell` points into the map value, valid for this program run;
    // the daemon writes limit, period and action with whole-value updates.
    let (limit, period_ms, on_exceed) =
        unsafe { ((*cell).limit, (*cell).period_ms, (*cell).on_exceed) };
    // SAFETY: helper without arguments.
    let now_ms = unsafe { bpf_ktime_get_boot_ns() } / 1_000_000;
    // SAFETY: as above; the state word is 8-byte aligned (first field).
    let state = unsafe { &raw mut (*cell).state };
    let mut i = 0;
    while i < TRIES {
        // SAFETY: aligned pointer into the map value.
        let old = unsafe { core::ptr::read_volatile(state) };
        let (new, taken) = guard_common::budget::step(old, now_ms, limit, period_ms);
        if new == old {
            return guard_common::budget::charge(taken, on_exceed);
        }
        // SAFETY: as above; BPF_CMPXCHG on a map value (kernel 5.12+).
        let (_, swapped) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { core::intrinsics::AtomicOrdering::SeqCst },
                { core::intrinsics::AtomicOrdering::SeqCst },
            >(state, old, new)
        };
        if swapped {
            return guard_common::budget::charge(taken, on_exceed);
        }
        i += 1;
    }
    Charge::Over {
        action: on_exceed,
        first: false,
    }
}
