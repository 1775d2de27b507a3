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

/// Reads the set from a read's lines. `previous` is the set before it, and `now` trusted
/// now.
pub(crate) fn select(lines: &[Line], previous: &[Member], now: i64) -> Selection {
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
    let (members, mismatched) = choose(&candidates, now);
    refused.extend(mismatched);
    refused.sort_by_key(|r| r.0);
    Selection {
        candidates,
        members,
        refused,
    }
}

/// Chooses the set among a read's candidates at `now`: the licenses of one customer, in
/// canonical order (by `exp`, `nbf`, fingerprint), and the lines of other customers,
/// refused. The customer is the one of the license that ends last among those whose
/// window has started (among all, if none has): a renewal issued under a renamed customer
/// takes over, wherever its line stands, once it starts, and a renewal installed ahead
/// leaves the license in force alone until then. (Ties: the smallest fingerprint, so
/// that no order of lines decides.)
pub(crate) fn choose(
    candidates: &[(Option<usize>, Member)],
    now: i64,
) -> (Vec<Member>, Vec<(usize, String, LicenseError)>) {
    let last = |pool: &mut dyn Iterator<Item = &Member>| {
        pool.max_by(|a, b| {
            a.claims
                .ends()
                .cmp(&b.claims.ends())
                .then_with(|| b.print.cmp(&a.print))
        })
        .map(|m| m.claims.customer.clone())
    };
    let customer = last(
        &mut candidates
            .iter()
            .map(|(_, m)| m)
            .filter(|m| started(&m.claims, now)),
    )
    .or_else(|| last(&mut candidates.iter().map(|(_, m)| m)));
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
    members.sort_by(|a, b| {
        (a.claims.exp, a.claims.nbf, &a.print).cmp(&(b.claims.exp, b.claims.nbf, &b.print))
    });
    (members, mismatched)
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
    fn a_renamed_renewal_installed_ahead_takes_over_when_it_starts() {
        let current = line(1, "Acme Corp", 5_000);
        let mut renewal = line(2, "Acme Corporation", 50_000);
        let mut held = Claims::new("Acme Corporation", 50_000);
        held.nbf = Some(4_000);
        renewal.verified = Ok(Arc::new(held));
        let s = select(&[current, renewal], &[], 1_000);
        assert_eq!(
            customers(&s),
            ["Acme Corp"],
            "the license in force stays alone"
        );
        let (later, refused) = choose(&s.candidates, 4_000);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].claims.customer, "Acme Corporation");
        assert_eq!(refused[0].0, 1);
    }

    #[test]
    fn a_renewal_put_in_place_of_the_license_in_force_keeps_it_until_its_end() {
        let valid = select(&[line(1, "Acme", 5_000)], &[], 1_000);
        let mut held = line(1, "Acme", 50_000);
        let mut claims = Claims::new("Acme", 50_000);
        claims.nbf = Some(4_000);
        held.verified = Ok(Arc::new(claims));
        let s = select(&[held], &valid.members, 1_000);
        assert_eq!(s.members.len(), 2);
        assert!(s.refused.is_empty());
        // An expired one in its place replaces it: a good read is the set.
        let s = select(&[line(1, "Acme", 500)], &valid.members, 1_000);
        assert_eq!(s.members.len(), 1);
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
