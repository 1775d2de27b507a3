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

/// What a read makes of the set.
#[derive(Debug)]
pub(crate) struct Selection {
    /// The licenses, in canonical order (by `exp`, `nbf`, fingerprint); empty when no
    /// line verified.
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
    c.nbf.is_none_or(|nbf| nbf <= now) && now < c.exp
}

fn held(c: &Claims, now: i64) -> bool {
    c.nbf.is_some_and(|nbf| nbf > now) && c.nbf < Some(c.exp)
}

/// Chooses the set from a read's lines. `previous` is the set in force before it, and
/// `now` trusted now.
pub(crate) fn select(lines: &[Line], previous: &[Member], now: i64) -> Selection {
    let mut good: Vec<(usize, Member)> = Vec::new();
    let mut refused: Vec<(usize, String, LicenseError)> = Vec::new();
    for line in lines {
        match &line.verified {
            // A token repeated is one license.
            Ok(_) if good.iter().any(|(_, m)| m.print == line.print) => {}
            Ok(claims) => good.push((
                line.line,
                Member {
                    claims: Arc::clone(claims),
                    print: line.print.clone(),
                },
            )),
            Err(error) => refused.push((line.line, line.print.clone(), error.clone())),
        }
    }
    // The set's customer is the customer of the license that ends last: a renewal issued
    // under a renamed customer takes over, wherever its line stands. (Ties: the smallest
    // fingerprint, so that no order of lines decides.)
    let customer = good
        .iter()
        .map(|(_, m)| m)
        .max_by(|a, b| {
            a.claims
                .exp
                .cmp(&b.claims.exp)
                .then_with(|| b.print.cmp(&a.print))
        })
        .map(|m| m.claims.customer.clone());
    if let Some(customer) = &customer {
        good.retain(|(line, m)| {
            if m.claims.customer == *customer {
                return true;
            }
            refused.push((
                *line,
                m.print.clone(),
                LicenseError::CustomerMismatch {
                    expected: customer.clone(),
                    found: m.claims.customer.clone(),
                },
            ));
            false
        });
    }
    let mut members: Vec<Member> = good.into_iter().map(|(_, m)| m).collect();
    // A set of licenses held for later and nothing in force now, read while the last set
    // had a license in force (the operator replaced this year's token with next year's
    // instead of adding it): the license in force stays until its own end, as if both
    // lines were there. It was verified, and it ends no later than it would have. (A set
    // of expired licenses replaces the last one outright.)
    if !members.iter().any(|m| in_force(&m.claims, now))
        && members.iter().any(|m| held(&m.claims, now))
        && let Some(customer) = &customer
    {
        for kept in previous {
            if in_force(&kept.claims, now)
                && kept.claims.customer == *customer
                && !members.iter().any(|m| m.print == kept.print)
            {
                members.push(kept.clone());
            }
        }
    }
    members.sort_by(|a, b| {
        (a.claims.exp, a.claims.nbf, &a.print).cmp(&(b.claims.exp, b.claims.nbf, &b.print))
    });
    refused.sort_by_key(|r| r.0);
    Selection { members, refused }
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
            let s = select(&lines, &[], 2_000);
            assert_eq!(customers(&s), ["Acme Corporation"]);
            assert_eq!(s.refused.len(), 1);
            assert_eq!(s.refused[0].2.reason(), "customer_mismatch");
        }
    }

    #[test]
    fn a_token_repeated_is_one_license() {
        let a = line(1, "Acme", 1_000);
        let s = select(&[a.clone(), a.clone(), a], &[], 0);
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
        let forward = select(&lines, &[], 0);
        let mut reversed = lines.to_vec();
        reversed.reverse();
        let backward = select(&reversed, &[], 0);
        assert_eq!(forward.members, backward.members);
        assert_eq!(
            forward.problem().map(|e| e.reason()),
            backward.problem().map(|e| e.reason())
        );
    }
}
