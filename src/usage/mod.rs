//! Usage metering and the usage journal: what a vendor selling by capacity needs from an
//! air-gapped customer at true-up.
//!
//! * The application meters what it sells through [`Usage`] ([`LicenseMonitor::usage`]):
//!   gauges ([`Usage::set`], a high-water mark per hour) and counters ([`Usage::add`], a
//!   total per hour). Each update is one atomic operation on a handle
//!   ([`Usage::gauge`], [`Usage::counter`]), or a map look-up and one atomic by name.
//! * The crate meters on its own: `iosetu_replicas` (1 while this instance runs),
//!   `iosetu_slots_held` (1 while it holds an instance slot), `iosetu_grace_seconds`
//!   (seconds in grace or cut off), `iosetu_requests_refused` (requests answered 503)
//!   and, with a journal, `iosetu_requests_admitted` (requests the license layer let
//!   through). Only a monitor that keeps a journal counts admitted requests: its gate
//!   opens in a second state that takes an out-of-line path adding to a per-thread
//!   counter, so the request path of a service without a journal is the same load and
//!   branch as before.
//! * With a journal ([`LicenseMonitorBuilder::usage_journal`]) every hour ends in a
//!   [`Record`]: hash-chained, signed with an Ed25519 key this instance made at its first
//!   start, with the licenses in force and their limits, the trusted-time watermark and a
//!   sequence number. [`Report`] is what the customer exports, [`verify`] what the vendor
//!   runs on one or several instances' reports: chain, signatures, gaps, clocks wound
//!   back, and the true-up table (the peak of each metric per month against its limit).
//! * Usage over a limit (a license's `limits` claim of the same name, or `max_instances`
//!   for `iosetu_replicas`) is never a cut-off: `license.limit_exceeded` (WARN, at most
//!   once per check interval per name) and the gauges `iosetu_license_usage{name}` and
//!   `iosetu_license_limit{name}`.
//!
//! What this can prove: a journal the library wrote and nobody changed verifies, and a
//! record edited, deleted, reordered, cut short, or taken from another journal shows, as
//! does a clock wound back under a running service. What it cannot: the customer controls
//! the machine and so the instance key; someone who reads the key and rewrites the whole
//! journal, or runs instances without a journal, is not caught by the journal. It is a
//! compliance aid, not proof.
//!
//! [`LicenseMonitor::usage`]: crate::LicenseMonitor::usage
//! [`LicenseMonitorBuilder::usage_journal`]: crate::LicenseMonitorBuilder::usage_journal
//! [`verify`]: fn@verify

mod export;
mod journal;
mod keeper;
mod rules;
pub(crate) mod task;
mod true_up;
mod verify;

pub(crate) use crate::metering::{Cell, Kind, Registry, month_of, validate_name};
pub use crate::metering::{
    GRACE_SECONDS, MAX_METRICS, MAX_NAME_BYTES, REPLICAS, REQUESTS_ADMITTED, REQUESTS_REFUSED,
    RESERVED_PREFIX, SLOTS_HELD, Usage, UsageCounter, UsageError, UsageGauge,
};

pub use export::{ExportError, REPORT_FORMAT, Report, export, export_all};
pub use journal::{LicenseInForce, Record, Span};
pub use true_up::TrueUpRow;
pub use verify::{Finding, FindingClass, FindingKind, InstanceSummary, Verification, verify};
