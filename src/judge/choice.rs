//! Which customer's licenses make up the set: the one whose licenses give the best
//! verdict, evaluated as the verdict itself is.

use std::sync::Arc;

use super::{Judge, Member};
use crate::token::Claims;
use crate::verdict::{LicenseState, evaluate};

impl Judge {
    /// The set at trusted second `at`, as judged there: the licenses of the customer whose
    /// licenses give the best verdict then, evaluated as the verdict itself is (in force
    /// beats grace beats cut off; then the later cut-off; then more features; then the
    /// smaller name, for determinism). So a trial under a corrected name never costs the
    /// contract beside it, whatever else (a clock set back, a revocation) is going on.
    pub(super) fn best_set(&self, at: i64) -> Vec<Member> {
        let rank = |state: LicenseState| match state {
            LicenseState::Valid => 2,
            LicenseState::Grace => 1,
            _ => 0,
        };
        let mut customers = self.reads.by_customer(at, self.mono);
        if customers.len() < 2 {
            // (One customer, or none: nothing to choose between.)
            return customers
                .pop()
                .map(|(_, members)| members)
                .unwrap_or_default();
        }
        let mut best: Option<((u8, i64, usize), Vec<Member>)> = None;
        for (_, members) in customers {
            let licenses: Vec<Arc<Claims>> =
                members.iter().map(|m| Arc::clone(&m.claims)).collect();
            let mut input = self.input(&licenses, at);
            // (Manipulation-grace ends where the wall agrees and a license is in force:
            // each customer is judged as the verdict would be with its licenses.)
            if self.time.wall_is_consistent()
                && licenses
                    .iter()
                    .any(|c| c.nbf.is_none_or(|nbf| nbf <= at) && at < c.ends())
            {
                input.manipulated_at = None;
            }
            let evaluation = evaluate(&input);
            let verdict = &evaluation.verdict;
            let cut_off = match verdict.state {
                LicenseState::Valid => evaluation.cut_off,
                _ => verdict.grace_ends_at.map(crate::clock::unix_seconds),
            };
            let key = (
                rank(verdict.state),
                cut_off.unwrap_or(i64::MIN),
                verdict.features().len(),
            );
            // (Customers come by name: a tie keeps the smaller one.)
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, members));
            }
        }
        best.map(|(_, members)| members).unwrap_or_default()
    }
}
