//! The set rules: which verified lines of a read make up the license set.
//!
//! Three laws hold here and in [`evaluate`](crate::verdict::evaluate), and the judge's
//! simulation checks them over every schedule: adding a validly signed license never
//! makes a verdict worse, the order of lines does not matter, and a token repeated is one
//! license. So a set is chosen by values, never by position: its customer is the one of
//! the license that ends last, duplicates collapse by fingerprint, and the set is kept in
//! a canonical order.

use std::sync::Arc;

use crate::token::{Claims, LicenseError};

/// One line of a read, verified by the shell (verification is pure but costly, so the
/// judge is handed its result).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// 1-based line number in the source.
    pub(crate) line: usize,
    /// The token's fingerprint: equal tokens have equal fingerprints.
    pub(crate) print: String,
    /// The verified claims, or why the token was refused.
    pub(crate) verified: Result<Arc<Claims>, LicenseError>,
}

/// A license of the set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub(crate) claims: Arc<Claims>,
    pub(crate) print: String,
}

/// The licenses a read brings: its lines that verified (a token repeated counts once),
/// and licenses of the last set kept in force (line `None`).
pub(crate) type Candidates = Vec<(Option<usize>, Member)>;

/// What a read makes of the set.
#[derive(Debug)]
pub(crate) struct Selection {
    /// The read's candidates: what the set is chosen from at every check.
    pub(crate) candidates: Candidates,
    /// The set chosen now (see [`choose`]).
    pub(crate) members: Vec<Member>,
    /// The refused lines, by line number, with their fingerprint and reason.
    pub(crate) refused: Vec<(usize, String, LicenseError)>,
}

impl Selection {
    /// The problem that stands for the read: the same whatever the order of lines.
    pub(crate) fn problem(&self) -> Option<LicenseError> {
        self.refused
            .iter()
            .min_by(|a, b| a.2.reason().cmp(b.2.reason()).then_with(|| a.1.cmp(&b.1)))
            .map(|(_, _, e)| e.clone())
    }
}

fn in_force(c: &Claims, now: i64) -> bool {
    c.nbf.is_none_or(|nbf| nbf <= now) && now < c.ends()
}

fn held(c: &Claims, now: i64) -> bool {
    c.nbf.is_some_and(|nbf| nbf > now) && c.nbf < Some(c.ends())
}

fn started(c: &Claims, now: i64) -> bool {
    c.nbf.is_none_or(|nbf| nbf <= now) && c.nbf < Some(c.ends())
}

/// Reads the set from a read's lines. `previous` is the set before it, `now` trusted now
/// and `default_grace` the builder's grace.
pub(crate) fn select(
    lines: &[Line],
    previous: &[Member],
    now: i64,
    default_grace: i64,
) -> Selection {
    let mut candidates: Candidates = Vec::new();
    let mut refused: Vec<(usize, String, LicenseError)> = Vec::new();
    for line in lines {
        match &line.verified {
            // A token repeated is one license.
            Ok(_) if candidates.iter().any(|(_, m)| m.print == line.print) => {}
            Ok(claims) => candidates.push((
                Some(line.line),
                Member {
                    claims: Arc::clone(claims),
                    print: line.print.clone(),
                },
            )),
            Err(error) => refused.push((line.line, line.print.clone(), error.clone())),
        }
    }
    // A read of licenses held for later and nothing in force now, while the last set had
    // a license in force (the operator replaced this year's token with next year's
    // instead of adding it): the licenses in force stay until their own end, as if both
    // lines were there. They were verified, and they end no later than they would have.
    // (A read of expired licenses replaces the set outright, as any good read does.)
    if !candidates.iter().any(|(_, m)| in_force(&m.claims, now))
        && candidates.iter().any(|(_, m)| held(&m.claims, now))
    {
        for kept in previous {
            if in_force(&kept.claims, now) && !candidates.iter().any(|(_, m)| m.print == kept.print)
            {
                candidates.push((None, kept.clone()));
            }
        }
    }
    let (members, mismatched) = choose(&candidates, now, default_grace);
    refused.extend(mismatched);
    refused.sort_by_key(|r| r.0);
    Selection {
        candidates,
        members,
        refused,
    }
}

/// How a customer's licenses stand at an instant: what the set's customer is chosen by.
/// Ordered so that the best standing is the greatest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Standing {
    /// 3 in force, 2 in grace, 1 cut off, 0 nothing started yet.
    state: u8,
    /// Where the customer would be cut off: the latest `exp` (or revocation) plus that
    /// license's grace among the licenses that make up its coverage.
    cut_off: i64,
    /// How many features its licenses in force grant.
    features: usize,
}

fn standing(members: &[&Member], now: i64, default_grace: i64) -> Standing {
    let grace = |c: &Claims| {
        c.grace_period_seconds
            .map_or(default_grace, |g| i64::try_from(g).unwrap_or(i64::MAX))
    };
    let cut = |c: &Claims| c.ends().saturating_add(grace(c));
    let in_force_now: Vec<&Claims> = members
        .iter()
        .map(|m| &*m.claims)
        .filter(|c| in_force(c, now))
        .collect();
    if !in_force_now.is_empty() {
        // The coverage in force, continued by licenses that start before it ends.
        let mut end = in_force_now.iter().map(|c| c.ends()).max().unwrap_or(now);
        let mut cut_off = in_force_now.iter().map(|c| cut(c)).max().unwrap_or(now);
        while let Some(next) = members
            .iter()
            .map(|m| &*m.claims)
            .filter(|c| started(c, end) && c.ends() > end)
            .max_by_key(|c| c.ends())
        {
            end = next.ends();
            cut_off = cut_off.max(cut(next));
        }
        let mut features: Vec<&str> = in_force_now
            .iter()
            .flat_map(|c| c.features.iter().map(String::as_str))
            .collect();
        features.sort_unstable();
        features.dedup();
        return Standing {
            state: 3,
            cut_off,
            features: features.len(),
        };
    }
    let started_ones = members
        .iter()
        .map(|m| &*m.claims)
        .filter(|c| started(c, now));
    match started_ones.map(cut).max() {
        Some(cut_off) => Standing {
            state: if now < cut_off { 2 } else { 1 },
            cut_off,
            features: 0,
        },
        None => Standing {
            state: 0,
            cut_off: members
                .iter()
                .map(|m| m.claims.ends())
                .max()
                .unwrap_or(i64::MIN),
            features: 0,
        },
    }
}

/// Chooses the set among a read's candidates at `now`: the licenses of one customer, in
/// canonical order (by `exp`, `nbf`, fingerprint), and the lines of other customers,
/// refused. The customer is the one whose licenses give the best verdict now: in force
/// beats grace beats cut off (and a customer with only licenses held for later comes
/// last); then the later cut-off; then more features in force; then the smaller name, so
/// that no order of lines decides. So a renewal issued under a renamed customer takes
/// over once it starts, a renewal installed ahead leaves the license in force alone until
/// then, and a trial under a corrected name never costs the contract beside it its
/// features, its grace or its cut-off. `default_grace` is the builder's grace, for
/// licenses that carry none of their own.
pub(crate) fn choose(
    candidates: &[(Option<usize>, Member)],
    now: i64,
    default_grace: i64,
) -> (Vec<Member>, Vec<(usize, String, LicenseError)>) {
    let mut customers: Vec<&str> = candidates
        .iter()
        .map(|(_, m)| m.claims.customer.as_str())
        .collect();
    customers.sort_unstable();
    customers.dedup();
    let customer = customers
        .iter()
        .map(|name| {
            let members: Vec<&Member> = candidates
                .iter()
                .map(|(_, m)| m)
                .filter(|m| m.claims.customer == *name)
                .collect();
            (standing(&members, now, default_grace), *name)
        })
        // The best standing; among equals, the smallest name (`Reverse` of it).
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name.to_owned());
    let mut members = Vec::new();
    let mut mismatched = Vec::new();
    for (line, member) in candidates {
        match &customer {
            Some(customer) if member.claims.customer != *customer => {
                if let Some(line) = line {
                    mismatched.push((
                        *line,
                        member.print.clone(),
                        LicenseError::CustomerMismatch {
                            expected: customer.clone(),
                            found: member.claims.customer.clone(),
                        },
                    ));
                }
            }
            _ => members.push(member.clone()),
        }
    }
    canonical(&mut members);
    (members, mismatched)
}

/// Puts a set in canonical order (by `exp`, `nbf`, fingerprint): no order of lines
/// decides anything.
pub(crate) fn canonical(members: &mut [Member]) {
    members.sort_by(|a, b| {
        (a.claims.exp, a.claims.nbf, &a.print).cmp(&(b.claims.exp, b.claims.nbf, &b.print))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize, customer: &str, exp: i64) -> Line {
        Line {
            line: n,
            print: format!("{customer}-{exp}"),
            verified: Ok(Arc::new(Claims::new(customer, exp))),
        }
    }

    fn customers(s: &Selection) -> Vec<&str> {
        s.members
            .iter()
            .map(|m| m.claims.customer.as_str())
            .collect()
    }

    #[test]
    fn the_customer_is_that_of_the_license_that_ends_last_in_any_order() {
        // Finding 3: the expired line first named the customer, and the renewal under the
        // renamed customer was refused.
        let old = line(1, "Acme Corp", 1_000);
        let renewal = line(2, "Acme Corporation", 5_000);
        for lines in [
            vec![old.clone(), renewal.clone()],
            vec![renewal.clone(), old.clone()],
        ] {
            let s = select(&lines, &[], 2_000, 3_600);
            assert_eq!(customers(&s), ["Acme Corporation"]);
            assert_eq!(s.refused.len(), 1);
            assert_eq!(s.refused[0].2.reason(), "customer_mismatch");
        }
    }

    #[test]
    fn a_renamed_renewal_installed_ahead_takes_over_when_it_starts() {
        let current = line(1, "Acme Corp", 5_000);
        let mut renewal = line(2, "Acme Corporation", 50_000);
        let mut held = Claims::new("Acme Corporation", 50_000);
        held.nbf = Some(4_000);
        renewal.verified = Ok(Arc::new(held));
        let s = select(&[current, renewal], &[], 1_000, 3_600);
        assert_eq!(
            customers(&s),
            ["Acme Corp"],
            "the license in force stays alone"
        );
        let (later, refused) = choose(&s.candidates, 4_000, 3_600);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].claims.customer, "Acme Corporation");
        assert_eq!(refused[0].0, 1);
    }

    #[test]
    fn a_renewal_put_in_place_of_the_license_in_force_keeps_it_until_its_end() {
        let valid = select(&[line(1, "Acme", 5_000)], &[], 1_000, 3_600);
        let mut held = line(1, "Acme", 50_000);
        let mut claims = Claims::new("Acme", 50_000);
        claims.nbf = Some(4_000);
        held.verified = Ok(Arc::new(claims));
        let s = select(&[held], &valid.members, 1_000, 3_600);
        assert_eq!(s.members.len(), 2);
        assert!(s.refused.is_empty());
        // An expired one in its place replaces it: a good read is the set.
        let s = select(&[line(1, "Acme", 500)], &valid.members, 1_000, 3_600);
        assert_eq!(s.members.len(), 1);
    }

    #[test]
    fn a_trial_under_a_corrected_name_never_costs_the_contract_beside_it() {
        // Issue 30, finding 5: the contract (sso, 7 days of signed grace, ends day 20) and
        // a trial under a corrected name (from day 10 to day 24, no grace).
        const DAY: i64 = 86_400;
        let mut contract = Claims::new("Acme Corp", 20 * DAY);
        contract.features = vec!["sso".into()];
        contract.grace_period_seconds = Some(7 * 86_400);
        let mut trial = Claims::new("Acme Corporation", 24 * DAY);
        trial.nbf = Some(10 * DAY);
        trial.grace_period_seconds = Some(0);
        let lines = [
            Line {
                line: 1,
                print: "contract".into(),
                verified: Ok(Arc::new(contract)),
            },
            Line {
                line: 2,
                print: "trial".into(),
                verified: Ok(Arc::new(trial)),
            },
        ];
        let chosen = |day: i64| {
            let s = select(&lines, &[], day * DAY, DAY);
            customers(&s).first().map(|c| (*c).to_owned())
        };
        // Both in force: the contract's cut-off (day 27) is the later one.
        assert_eq!(chosen(12).as_deref(), Some("Acme Corp"));
        // The contract in grace, the trial in force: the trial.
        assert_eq!(chosen(21).as_deref(), Some("Acme Corporation"));
        // The trial over (no grace), the contract still in its grace until day 27.
        assert_eq!(chosen(25).as_deref(), Some("Acme Corp"));
    }

    #[test]
    fn a_token_repeated_is_one_license() {
        let a = line(1, "Acme", 1_000);
        let s = select(&[a.clone(), a.clone(), a], &[], 0, 3_600);
        assert_eq!(s.members.len(), 1);
        assert!(s.refused.is_empty());
    }

    #[test]
    fn the_order_of_lines_decides_nothing() {
        let lines = [
            line(1, "Acme", 3_000),
            line(2, "Acme", 1_000),
            line(3, "Other", 2_000),
            Line {
                line: 4,
                print: "bad".into(),
                verified: Err(LicenseError::BadSignature),
            },
        ];
        let forward = select(&lines, &[], 0, 3_600);
        let mut reversed = lines.to_vec();
        reversed.reverse();
        let backward = select(&reversed, &[], 0, 3_600);
        assert_eq!(forward.members, backward.members);
        assert_eq!(
            forward.problem().map(|e| e.reason()),
            backward.problem().map(|e| e.reason())
        );
    }
}
