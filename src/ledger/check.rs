//! What the ledger adds to usage verification: instances missing or new, receipted heads
//! cut, notices rolled back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::Connection;

use super::entries::{InstanceEntry, Receipted, instances, receipted};
use super::{Ledger, LedgerError, short};
use crate::clock::rfc3339;
use crate::usage::{Finding, FindingKind, Report, Span};

/// The customer the reports' records name (the customer of the licenses in force when
/// they were written): `None` when no record names one (no license was in force), an
/// error when they name several.
pub fn customer_of(reports: &[Report]) -> Result<Option<String>, LedgerError> {
    let customers: BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| &r.records)
        .flat_map(|r| &r.licenses)
        .map(|l| l.customer.as_str())
        .collect();
    match customers.len() {
        0 => Ok(None),
        1 => Ok(customers.first().map(|c| (*c).to_owned())),
        _ => Err(LedgerError::SeveralCustomers {
            customers: customers.into_iter().map(str::to_owned).collect(),
        }),
    }
}

impl Ledger {
    /// What the ledger says about `customer`'s `reports`, without recording anything:
    /// instances missing since an earlier true-up, keys never seen, receipted heads the
    /// reports no longer hold, and journals whose notices went back since an earlier
    /// true-up. See the [module docs](super).
    pub fn check(&self, customer: &str, reports: &[Report]) -> Result<Vec<Finding>, LedgerError> {
        self.read(|conn, path| {
            let known = Known::load(conn, path, customer)?;
            Ok(known.findings(customer, reports))
        })
    }
}

/// What the ledger knew of a customer before a true-up.
#[derive(Debug, Default)]
pub(super) struct Known {
    pub(super) instances: BTreeMap<String, InstanceEntry>,
    receipted: Vec<Receipted>,
}

impl Known {
    pub(super) fn load(
        conn: &Connection,
        path: &Path,
        customer: &str,
    ) -> Result<Self, LedgerError> {
        Ok(Self {
            instances: instances(conn, path, customer)?,
            receipted: receipted(conn, path, customer)?,
        })
    }

    /// The ledger's findings on `reports` (pure: what [`Ledger::check`] returns).
    pub(super) fn findings(&self, customer: &str, reports: &[Report]) -> Vec<Finding> {
        let mut findings = Vec::new();
        let latest = latest(reports);
        // Every key a report's journal ever declared: a journal whose key was replaced
        // continues under the new one, and is still the instance the ledger knew.
        let declared: BTreeMap<&str, &Report> = latest
            .values()
            .flat_map(|report| keys_of(report).into_iter().map(move |k| (k, *report)))
            .collect();
        for (key, instance) in &self.instances {
            if !declared.contains_key(key.as_str()) {
                findings.push(Finding {
                    instance: short(key),
                    kind: FindingKind::MissingInstance,
                    n: instance.head_n,
                    detail: format!(
                        "an instance of {customer:?} known since true-up {} and last seen at \
                         true-up {} ({}, head record {}) is in none of these reports: stopped \
                         for good, or its journal withheld",
                        instance.first_true_up,
                        instance.last_true_up,
                        rfc3339(instance.last_seen),
                        instance
                            .head_n
                            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    ),
                });
            }
        }
        for (key, report) in &latest {
            if self.instances.contains_key(*key) {
                continue;
            }
            let continued = keys_of(report)
                .into_iter()
                .find(|k| k != key && self.instances.contains_key(*k));
            let detail = match continued {
                Some(old) => format!(
                    "a key the ledger has not seen, continuing the journal of instance {} \
                     (its key file was lost or replaced)",
                    short(old)
                ),
                None if self.instances.is_empty() => format!(
                    "a key the ledger has not seen (the ledger's first true-up of {customer:?})"
                ),
                None => "a key the ledger has not seen: a new instance, or one that had to \
                         make a new key"
                    .to_owned(),
            };
            findings.push(Finding {
                instance: short(key),
                kind: FindingKind::NewKey,
                n: None,
                detail,
            });
        }
        // Receipted heads each instance's latest report no longer holds: the highest one
        // per key is reported.
        let mut cut: BTreeMap<&str, &Receipted> = BTreeMap::new();
        for receipted in &self.receipted {
            let Some(report) = declared.get(receipted.head.key.as_str()) else {
                continue; // (Missing altogether: MissingInstance says so.)
            };
            if !holds_head(report, receipted.head.n, &receipted.head.link) {
                let e = cut.entry(receipted.head.key.as_str()).or_insert(receipted);
                if receipted.head.n > e.head.n {
                    *e = receipted;
                }
            }
        }
        for (key, receipted) in cut {
            let report = declared.get(key).copied();
            findings.push(Finding {
                instance: short(report.map_or(key, |r| r.key.as_str())),
                kind: FindingKind::ReceiptCut,
                n: Some(receipted.head.n),
                detail: format!(
                    "receipt seq {} accepted record {} (link {}…) of instance {}; the report \
                     does not hold it (its head is record {}): the journal was cut, rewritten \
                     or restored below what was accepted",
                    receipted.seq,
                    receipted.head.n,
                    receipted.head.link.chars().take(12).collect::<String>(),
                    short(key),
                    report
                        .and_then(|r| r.head_n)
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ),
            });
        }
        // Notices a journal showed at an earlier true-up that it no longer shows.
        for (key, report) in &latest {
            let (seq, revocations) = shown_notices(report, customer);
            for old in keys_of(report) {
                let Some(known) = self.instances.get(old) else {
                    continue;
                };
                if seq < known.notice_seq || revocations < known.revocations {
                    findings.push(Finding {
                        instance: short(key),
                        kind: FindingKind::NoticeRollback,
                        n: report.records.last().map(|r| r.last_n()),
                        detail: format!(
                            "at true-up {} this journal showed vendor notice seq {} ({} \
                             revocations); its records now show at most seq {} ({}): a notice \
                             removed and the state file rolled back",
                            known.last_true_up,
                            seq_text(known.notice_seq),
                            known.revocations,
                            seq_text(seq),
                            revocations
                        ),
                    });
                    break;
                }
            }
        }
        findings
    }
}

fn seq_text(seq: Option<u64>) -> String {
    seq.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// The latest report of each key (by export time, then head), as `verify` takes it.
pub(super) fn latest(reports: &[Report]) -> BTreeMap<&str, &Report> {
    let mut latest: BTreeMap<&str, &Report> = BTreeMap::new();
    for report in reports {
        let e = latest.entry(report.key.as_str()).or_insert(report);
        if (report.exported_at, report.head_n) >= (e.exported_at, e.head_n) {
            *e = report;
        }
    }
    latest
}

/// The report's key and every key its records declare.
fn keys_of(report: &Report) -> BTreeSet<&str> {
    std::iter::once(report.key.as_str())
        .chain(report.records.iter().filter_map(|r| r.key.as_deref()))
        .collect()
}

/// The highest notice `seq` and the most revocations the report's records of `customer`
/// show.
pub(super) fn shown_notices(report: &Report, customer: &str) -> (Option<u64>, u64) {
    let mine = report
        .records
        .iter()
        .filter(|r| r.licenses.first().is_some_and(|l| l.customer == customer));
    let seq = mine.clone().filter_map(|r| r.notice_seq).max();
    let revocations = mine.map(|r| r.revocations).max().unwrap_or(0);
    (seq, revocations)
}

/// Whether the report holds record `n` with `link`: an hourly record of that number and
/// link, or a daily record that folded it in (its link, where `n` was the last it folds
/// in). A head older than a journal's first record, where that is a daily record, was
/// dropped with age (ten years of daily records are kept), not cut.
fn holds_head(report: &Report, n: u64, link: &str) -> bool {
    if report
        .records
        .first()
        .is_some_and(|first| first.span == Span::Day && n < first.n)
    {
        return true;
    }
    report.records.iter().any(|r| match r.span {
        Span::Hour => r.n == n && r.link() == link,
        Span::Day => r.n <= n && n <= r.last_n() && (n != r.last_n() || r.link() == link),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReceiptHead;
    use crate::usage::{LicenseInForce, Record, Span};

    fn record(n: u64, span: Span, key: Option<&str>) -> Record {
        Record {
            v: 1,
            n,
            n_end: (span == Span::Day).then_some(n + 23),
            span,
            key: key.map(str::to_owned),
            prev: "0".repeat(64),
            last: (span == Span::Day).then(|| format!("{:064x}", n + 23)),
            start: 1_800_000_000 + n as i64 * 3600,
            end: 1_800_000_000 + n as i64 * 3600 + 3600,
            watermark: 1_800_000_000,
            wall: 1_800_000_000,
            boot: 0,
            uptime: 0,
            licenses: vec![LicenseInForce {
                jti: None,
                customer: "Acme".into(),
                exp: 1_900_000_000,
                limits: BTreeMap::new(),
                max_instances: None,
            }],
            gauges: BTreeMap::new(),
            counters: BTreeMap::new(),
            notice_seq: Some(3),
            revocations: 1,
            notes: Vec::new(),
            sig: None,
        }
    }

    fn report(key: &str, records: Vec<Record>) -> Report {
        Report {
            format: crate::usage::REPORT_FORMAT.into(),
            key: key.into(),
            exported_at: 1_900_000_000,
            head_n: records.last().map(Record::last_n),
            head_link: records.last().map(Record::link),
            torn: false,
            damaged_lines: 0,
            sig: String::new(),
            records,
        }
    }

    fn instance(key: &str, notice_seq: Option<u64>, revocations: u64) -> InstanceEntry {
        InstanceEntry {
            key: key.into(),
            first_seen: 0,
            last_seen: 0,
            first_true_up: 1,
            last_true_up: 1,
            head_n: Some(1),
            head_link: None,
            notice_seq,
            revocations,
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_head_is_held_by_its_hourly_record_or_a_daily_record_that_folds_it_in() {
        let hourly = report("k", (0..5).map(|n| record(n, Span::Hour, None)).collect());
        let link = hourly.records[3].link();
        assert!(holds_head(&hourly, 3, &link));
        assert!(!holds_head(&hourly, 3, &"0".repeat(64)), "another link");
        assert!(!holds_head(&hourly, 7, &link), "beyond the head");
        // Folded into a daily record: inside it, and at its end (by its link).
        let day = record(0, Span::Day, None);
        let daily = report("k", vec![day.clone(), record(24, Span::Hour, None)]);
        assert!(holds_head(&daily, 5, "whatever"));
        assert!(holds_head(&daily, 23, &day.link()));
        assert!(!holds_head(&daily, 23, &"1".repeat(64)));
        // Older than the first record, a daily one: dropped with age.
        let aged = report("k", vec![record(48, Span::Day, None)]);
        assert!(holds_head(&aged, 5, "whatever"));
        // Older than the first record, an hourly one: cut.
        let cut = report("k", vec![record(48, Span::Hour, None)]);
        assert!(!holds_head(&cut, 5, "whatever"));
    }

    #[test]
    fn findings_follow_the_keys_receipts_and_notices_the_ledger_knows() {
        let a = report(
            "aaaa",
            (0..4)
                .map(|n| record(n, Span::Hour, Some("aaaa")).clone())
                .collect(),
        );
        let mut known = Known::default();
        // The first true-up: every key is new.
        assert_eq!(
            kinds(&known.findings("Acme", std::slice::from_ref(&a))),
            [FindingKind::NewKey]
        );
        known
            .instances
            .insert("aaaa".into(), instance("aaaa", Some(3), 1));
        known
            .instances
            .insert("bbbb".into(), instance("bbbb", None, 0));
        known.receipted.push(Receipted {
            seq: 4,
            head: ReceiptHead {
                key: "aaaa".into(),
                n: 2,
                link: a.records[2].link(),
            },
        });
        // b is missing; a holds its receipted head and shows its notices.
        assert_eq!(
            kinds(&known.findings("Acme", std::slice::from_ref(&a))),
            [FindingKind::MissingInstance]
        );
        // a cut below the receipted head.
        let cut = report("aaaa", a.records[..2].to_vec());
        let findings = known.findings("Acme", &[cut]);
        assert!(
            kinds(&findings).contains(&FindingKind::ReceiptCut),
            "{findings:?}"
        );
        // a continued under a new key: not missing, not cut, and a new key.
        let mut replaced = a.clone();
        replaced.key = "cccc".into();
        let findings = known.findings("Acme", &[replaced]);
        assert_eq!(
            kinds(&findings),
            [FindingKind::MissingInstance, FindingKind::NewKey],
            "{findings:?}"
        );
        assert!(
            findings[1]
                .detail
                .contains("continuing the journal of instance aaaa")
        );
        // Its notices went back since the true-up that saw seq 3.
        let mut rolled = a.clone();
        for r in &mut rolled.records {
            r.notice_seq = Some(2);
        }
        assert!(kinds(&known.findings("Acme", &[rolled])).contains(&FindingKind::NoticeRollback));
        let mut unrevoked = a.clone();
        for r in &mut unrevoked.records {
            r.revocations = 0;
        }
        assert!(
            kinds(&known.findings("Acme", &[unrevoked])).contains(&FindingKind::NoticeRollback)
        );
        // Records of another customer's licenses do not count for this one's notices.
        assert_eq!(shown_notices(&a, "Acme"), (Some(3), 1));
        assert_eq!(shown_notices(&a, "Globex"), (None, 0));
    }

    #[test]
    fn the_customer_is_the_one_the_records_name() {
        let a = report("a", vec![record(0, Span::Hour, None)]);
        assert_eq!(
            customer_of(std::slice::from_ref(&a)).unwrap().as_deref(),
            Some("Acme")
        );
        assert_eq!(customer_of(&[report("e", vec![])]).unwrap(), None);
        let mut other = a.clone();
        other.records[0].licenses[0].customer = "Globex".into();
        let err = customer_of(&[a, other]).unwrap_err();
        assert_eq!(err.reason(), "several_customers");
        assert!(err.to_string().contains("Acme, Globex"), "{err}");
    }
}
