//! `usage export` (the customer's side) and `usage verify` (the vendor's: the true-up
//! table, recorded in the ledger, and a usage receipt on request).

use std::path::Path;

use iosetu_license::ledger::{self, Ledger, ReceiptSigner};
use iosetu_license::usage::FindingClass;

use crate::UsageVerifyArgs;
use crate::common::{
    Failure, describe_notice, emit, ledger_failure, print_or_exit, rfc3339, signer, write_new,
};

pub(crate) fn export(journal: &Path, out: &Path, force: bool) -> Result<(), Failure> {
    // Every journal of the set: one per process that ran at once on the path.
    let reports = iosetu_license::usage::export_all(journal, std::time::SystemTime::now())
        .map_err(|e| Failure::usage(format!("cannot export ({}): {e}", e.reason())))?;
    let mut json = match reports.as_slice() {
        [report] => report.to_json(),
        _ => {
            let values: Vec<serde_json::Value> = reports
                .iter()
                .filter_map(|r| serde_json::from_str(&r.to_json()).ok())
                .collect();
            serde_json::to_string_pretty(&values).unwrap_or_default()
        }
    };
    json.push('\n');
    write_new(out, json.as_bytes(), 0o644, force)?;
    for report in &reports {
        say!(
            "{} {}: {} records{}{} -> {}",
            journal.display(),
            report.key.chars().take(12).collect::<String>(),
            report.records.len(),
            if report.torn {
                " (a record cut short at the end left out)"
            } else {
                ""
            },
            if report.damaged_lines > 0 {
                format!(" ({} damaged lines left out)", report.damaged_lines)
            } else {
                String::new()
            },
            out.display()
        );
    }
    Ok(())
}

pub(crate) fn verify(args: UsageVerifyArgs) -> Result<(), Failure> {
    let csv = args.csv;
    if csv && args.receipt && args.out.is_none() {
        return Err(Failure::usage(
            "--receipt with --csv needs --out: the CSV table is what stdout carries",
        ));
    }
    let mut reports = Vec::new();
    for path in &args.reports {
        let read = iosetu_license::usage::Report::read_all(path)
            .map_err(|e| Failure::usage(format!("{e} ({})", e.reason())))?;
        reports.extend(read);
    }
    let customer = match (
        ledger::customer_of(&reports).map_err(ledger_failure)?,
        args.customer,
    ) {
        (Some(named), Some(given)) if named != given => {
            return Err(Failure::usage(format!(
                "the reports are {named:?}'s, not {given:?}'s (--customer)"
            )));
        }
        (Some(named), _) => named,
        (None, Some(given)) if !given.trim().is_empty() => given,
        (None, _) => {
            return Err(Failure::usage(
                "the reports' records name no customer (no license was in force): give \
                 --customer",
            ));
        }
    };
    // The key before the ledger: a wrong path is reported before anything is recorded.
    let signer = match &args.key {
        Some(path) => Some(signer(path, args.kid.as_ref())?),
        None => None,
    };
    let receipt = signer.as_ref().map(|signer| {
        let mut receipt = ReceiptSigner::new(signer);
        if let Some(iss) = &args.iss {
            receipt = receipt.issuer(iss.clone());
        }
        if let Some(aud) = &args.aud {
            receipt = receipt.audience(aud.clone());
        }
        receipt
    });
    let mut ledger = Ledger::open(&args.ledger).map_err(ledger_failure)?;
    let true_up = ledger
        .true_up(&customer, &reports, receipt.as_ref())
        .map_err(ledger_failure)?;
    let verification = &true_up.verification;
    let recorded = format!(
        "ledger {}: true-up {} of {customer} recorded ({} report(s))",
        args.ledger.display(),
        true_up.id,
        reports.len()
    );
    let findings: Vec<String> = verification
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {}{}: {}",
                match f.kind.class() {
                    FindingClass::Tampering => "TAMPERED",
                    FindingClass::Fault => "fault   ",
                    _ => "unknown ",
                },
                f.instance,
                f.kind.code(),
                f.n.map(|n| format!(" (record {n})")).unwrap_or_default(),
                f.detail
            )
        })
        .collect();
    if csv {
        for line in &findings {
            eprintln!("{line}");
        }
        print_or_exit(&verification.csv());
    } else {
        for instance in &verification.instances {
            say!(
                "instance {}: {} report(s), {} records, {} to {}, started {} times",
                instance.instance,
                instance.reports,
                instance.records,
                instance.first.map_or_else(|| "-".into(), rfc3339),
                instance.last.map_or_else(|| "-".into(), rfc3339),
                instance.starts
            );
        }
        for line in &findings {
            say!("{line}");
        }
        let count = |class| {
            verification
                .findings
                .iter()
                .filter(|f| f.kind.class() == class)
                .count()
        };
        say!(
            "{}; {} honest fault(s), {} finding(s) of time unaccounted for",
            if verification.intact() {
                "no tampering"
            } else {
                "TAMPERING FOUND"
            },
            count(FindingClass::Fault),
            count(FindingClass::Unknown)
        );
        say!("{recorded}");
        say!("");
        print_or_exit(&verification.table());
    }
    if csv {
        eprintln!("{recorded}");
    }
    match (&true_up.receipt, args.receipt) {
        (Some(issued), _) => {
            for line in describe_notice(&issued.notice) {
                eprintln!("{line}");
            }
            eprintln!(
                "usage receipt: add the line to the customer's notice source (its next \
                 report must extend each head)"
            );
            emit(&issued.token, args.out.as_deref(), "receipt")?;
        }
        (None, true) if verification.intact() => {
            eprintln!("no receipt: the reports hold no records to receipt");
        }
        (None, true) => eprintln!("no receipt: the reports show tampering"),
        (None, false) => {}
    }
    // Only tampering fails: an honest fault or an hour unaccounted for is the vendor's
    // to read, never an accusation.
    if verification.intact() {
        Ok(())
    } else {
        Err(Failure::invalid("the usage reports show tampering"))
    }
}
