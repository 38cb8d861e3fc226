//! The one decision ladder. Every guarded call, whichever backend sees it
//! (an LSM hook, a cgroup socket hook, the seccomp supervisor), climbs the
//! same rungs in the same order:
//!
//! audit → allow (→ budget) → grant → hold → deny
//!
//! A call the verdict allows is then charged to the agent's budget
//! ([`crate::budget`]): over it, the budget's `on_exceed` turns the allow
//! into a hold or a deny. Only allowed calls are counted: what a rule
//! holds or denies is already stopped.
//! The policy gives a verdict and the rule that gave it; the agent's mode
//! adjusts it ([`applied_verdict`]); then the first rung that applies
//! decides. The caller performs what the rung says (the kernel stops the
//! thread for [`Rung::Hold`], the supervisor parks the notification).
use crate::{Charge, Exceed, Mode, RULE_DEFAULT, Verdict};

/// The verdict a call gets under `mode` (raw numbers, as the kernel holds
/// them), given the policy's `verdict` and the `rule_id` that gave it.
/// Freeze holds what only the agent's default allows; an explicit allow
/// rule still allows, and what is denied stays denied: freezing an agent
/// only ever tightens it.
#[inline(always)]
pub const fn applied_verdict(mode: u8, verdict: u8, rule_id: u32) -> u8 {
    if mode == Mode::Freeze as u8 && verdict == Verdict::Allow as u8 && rule_id == RULE_DEFAULT {
        Verdict::Ask as u8
    } else {
        verdict
    }
}

/// The rung that decided a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// Audit (shadow) mode: the call proceeds; the verdict is only reported.
    Audit,
    /// The verdict allows it.
    Allow,
    /// An `ask` that a live grant (an earlier scoped approval) covers: it
    /// proceeds without a hold. The grant's id.
    Grant(u32),
    /// An `ask` with no grant: the call waits for a human.
    Hold,
    /// Denied.
    Deny,
}

/// A call judged: the verdict as applied (what events report) and the rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    /// [`Verdict`] as a number, after the mode adjusted it.
    pub verdict: u8,
    pub rung: Rung,
    /// What the budget said ([`Charge::Free`] when it was not asked: any
    /// call but an allowed one). A `Hold` or `Deny` rung with
    /// [`Charge::Over`] is the budget's doing, not a rule's.
    pub budget: Charge,
}

impl Judged {
    /// Whether the budget, not the verdict, stopped this call.
    pub const fn over_budget(&self) -> bool {
        matches!(self.budget, Charge::Over { .. })
    }
}

/// Climbs the ladder for a call whose policy `verdict` came from `rule_id`
/// ([`RULE_DEFAULT`]: the agent's default). `grant` is asked only for an
/// `ask`, and returns the covering grant's id or 0; a backend that must
/// not use grants at this point (a held call consuming its decision)
/// returns 0. `budget` is asked only for an allowed call (not in audit
/// mode), and charges it to the agent's budget.
#[inline(always)]
pub fn ladder<G: FnOnce() -> u32, B: FnOnce() -> Charge>(
    mode: u8,
    verdict: u8,
    rule_id: u32,
    grant: G,
    budget: B,
) -> Judged {
    let verdict = applied_verdict(mode, verdict, rule_id);
    let mut charge = Charge::Free;
    let rung = if mode == Mode::Audit as u8 {
        Rung::Audit
    } else if verdict == Verdict::Allow as u8 {
        charge = budget();
        budget_rung(charge)
    } else if verdict == Verdict::Ask as u8 {
        match grant() {
            0 => Rung::Hold,
            id => Rung::Grant(id),
        }
    } else {
        Rung::Deny
    };
    Judged {
        verdict,
        rung,
        budget: charge,
    }
}

/// The rung of an allowed call, after its budget: over it, `on_exceed`
/// decides (an unknown action denies: fail closed).
#[inline(always)]
const fn budget_rung(charge: Charge) -> Rung {
    match charge {
        Charge::Free | Charge::Within => Rung::Allow,
        Charge::Over { action, .. } => {
            if action == Exceed::Ask as u8 || action == Exceed::Freeze as u8 {
                Rung::Hold
            } else {
                Rung::Deny
            }
        }
    }
}

/// The stricter of two (verdict, rule id) pairs, as a rename judges its
/// source and destination: deny > ask > allow, the first on a tie. The
/// mode is applied to each side first, so freeze holds a rename that only
/// the default allows on either side. Returns the winner (already applied,
/// and [`ladder`] may apply it again: that changes nothing) and whether it
/// was the second.
#[inline(always)]
pub fn stricter(mode: u8, a: (u8, u32), b: Option<(u8, u32)>) -> ((u8, u32), bool) {
    let a = (applied_verdict(mode, a.0, a.1), a.1);
    match b {
        Some(b) => {
            let b = (applied_verdict(mode, b.0, b.1), b.1);
            if b.0 > a.0 { (b, true) } else { (a, false) }
        }
        None => (a, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u8 = Verdict::Allow as u8;
    const ASK: u8 = Verdict::Ask as u8;
    const DENY: u8 = Verdict::Deny as u8;

    #[test]
    fn freeze_holds_only_what_the_default_allows() {
        let freeze = Mode::Freeze as u8;
        assert_eq!(applied_verdict(freeze, ALLOW, RULE_DEFAULT), ASK);
        assert_eq!(applied_verdict(freeze, ALLOW, 7), ALLOW, "explicit allow");
        assert_eq!(applied_verdict(freeze, DENY, RULE_DEFAULT), DENY);
        assert_eq!(applied_verdict(freeze, DENY, 7), DENY);
        assert_eq!(applied_verdict(freeze, ASK, 7), ASK);
        for mode in [Mode::Enforce as u8, Mode::Audit as u8] {
            for v in [ALLOW, ASK, DENY] {
                assert_eq!(applied_verdict(mode, v, RULE_DEFAULT), v);
            }
        }
    }

    #[test]
    fn rungs_in_order() {
        let enforce = Mode::Enforce as u8;
        let no_grant = || 0;
        let free = || Charge::Free;
        let j = |mode, verdict, rule, grant: u32| ladder(mode, verdict, rule, || grant, free);
        assert_eq!(j(Mode::Audit as u8, DENY, 3, 0).rung, Rung::Audit);
        assert_eq!(
            j(Mode::Audit as u8, DENY, 3, 0).verdict,
            DENY,
            "audit reports"
        );
        assert_eq!(j(enforce, ALLOW, 3, 9).rung, Rung::Allow);
        assert_eq!(j(enforce, ASK, 3, 9).rung, Rung::Grant(9));
        assert_eq!(ladder(enforce, ASK, 3, no_grant, free).rung, Rung::Hold);
        assert_eq!(
            j(enforce, DENY, 3, 9).rung,
            Rung::Deny,
            "grants never lift a deny"
        );
        let frozen = j(Mode::Freeze as u8, ALLOW, RULE_DEFAULT, 0);
        assert_eq!((frozen.verdict, frozen.rung), (ASK, Rung::Hold));
    }

    #[test]
    fn the_stricter_side_decides() {
        let enforce = Mode::Enforce as u8;
        assert_eq!(
            stricter(enforce, (ALLOW, 1), Some((DENY, 2))),
            ((DENY, 2), true)
        );
        assert_eq!(
            stricter(enforce, (ASK, 1), Some((ASK, 2))),
            ((ASK, 1), false),
            "tie: first"
        );
        assert_eq!(stricter(enforce, (DENY, 1), None), ((DENY, 1), false));
        // Freeze: the destination is only allowed by the default.
        let freeze = Mode::Freeze as u8;
        assert_eq!(
            stricter(freeze, (ALLOW, 4), Some((ALLOW, RULE_DEFAULT))),
            ((ASK, RULE_DEFAULT), true)
        );
    }

    #[test]
    fn the_grant_is_looked_up_only_for_an_ask() {
        let enforce = Mode::Enforce as u8;
        for v in [ALLOW, DENY] {
            let _ = ladder(
                enforce,
                v,
                1,
                || panic!("grant looked up for verdict {v}"),
                || Charge::Within,
            );
        }
        let _ = ladder(
            Mode::Audit as u8,
            ASK,
            1,
            || panic!("grant looked up in audit"),
            || panic!("budget charged in audit"),
        );
    }

    #[test]
    fn the_budget_is_charged_only_for_allowed_calls() {
        let enforce = Mode::Enforce as u8;
        let over = |action: Exceed| {
            move || Charge::Over {
                action: action.raw(),
                first: false,
            }
        };
        for v in [ASK, DENY] {
            let j = ladder(enforce, v, 1, || 0, || panic!("budget charged for {v}"));
            assert!(!j.over_budget());
        }
        let held = ladder(enforce, ALLOW, 1, || 0, over(Exceed::Ask));
        assert_eq!((held.verdict, held.rung), (ALLOW, Rung::Hold));
        assert!(held.over_budget());
        let frozen = ladder(enforce, ALLOW, 1, || 0, over(Exceed::Freeze));
        assert_eq!(frozen.rung, Rung::Hold);
        let denied = ladder(enforce, ALLOW, 1, || 0, over(Exceed::Deny));
        assert_eq!(denied.rung, Rung::Deny);
        let unknown = ladder(
            enforce,
            ALLOW,
            1,
            || 0,
            || Charge::Over {
                action: 99,
                first: true,
            },
        );
        assert_eq!(unknown.rung, Rung::Deny, "fail closed");
        let within = ladder(enforce, ALLOW, 1, || 0, || Charge::Within);
        assert_eq!(within.rung, Rung::Allow);
    }
}
